#!/usr/bin/env bash
# A/B of `mlakv bench decode` between builds, or between environment settings of one build, on one
# GPU, in alternating rounds (only pairs from one run are comparable: machines of a kind differ by
# several per cent).
#
#   scripts/ab-decode.sh VARIANT_A VARIANT_B [...] -- "case text" ["case text" ...]
#
# A VARIANT is DIR (a folder holding an `mlakv` built for sm_90a) or DIR@NAME=VALUE (the same
# binary with one environment variable set, e.g. .gl/next@MLAKV_DECODE_FP8_FORM=widen); the case
# texts go to `--only`. ROUNDS (default 2) rounds; the log goes to $OUT/ab.log and every run's
# records to one $OUT/ab.json, then one line per case with each variant's median over the rounds
# (scripts/perf_tables.py ab). Two files in $OUT whatever the variant count (the device tool
# brings back at most 8). AB_ARGS: more `bench decode` flags for every run (e.g. --back-to-back 8);
# AB_TIMEOUT: seconds per run (default 300: a kernel that hangs costs one run, not the call).
set -u -o pipefail
OUT="${OUT:-$PWD/ab-out}"
mkdir -p "$OUT"
runs="$(mktemp -d)"
variants=()
while [[ $# -gt 0 && "$1" != "--" ]]; do variants+=("$1"); shift; done
shift
only=()
for c in "$@"; do only+=(--only "$c"); done
# A label per variant, safe in a file name: the folder's name, then the setting without its
# MLAKV_DECODE_ prefix (the value alone made CLUSTER=0 and TMA=0 one column).
label() {
  local v="$1" l s
  l="$(basename "${v%%@*}")"
  s="${v#*@}"
  [[ "$v" == *@* ]] && l="$l+${s#MLAKV_DECODE_}"
  echo "${l//[^A-Za-z0-9_.+]/_}"
}
for r in $(seq 1 "${ROUNDS:-2}"); do
  for v in "${variants[@]}"; do
    dir="${v%%@*}" envs=()
    [[ "$v" == *@* ]] && envs=("${v#*@}")
    echo "==== round $r: $v" >>"$OUT/ab.log"
    timeout "${AB_TIMEOUT:-300}" env "${envs[@]}" "$dir/mlakv" bench decode "${only[@]}" ${AB_ARGS:-} --json "$runs/ab-$(label "$v")-$r.json" >>"$OUT/ab.log" 2>&1 ||
      echo "bench failed: $v round $r" | tee -a "$OUT/ab.log"
  done
done
# Variants in the order given, so that "last / first" is the last against the first.
files=()
for v in "${variants[@]}"; do files+=("$runs/ab-$(label "$v")"-*.json); done
python3 "$(dirname "$0")/perf_tables.py" ab "${files[@]}" | tee -a "$OUT/ab.log"
python3 -c 'import json, os, sys; json.dump({os.path.basename(p)[:-5]: json.load(open(p)) for p in sys.argv[2:]}, open(sys.argv[1], "w"), indent=1)' \
  "$OUT/ab.json" "${files[@]}" 2>>"$OUT/ab.log"
rm -rf "$runs"
