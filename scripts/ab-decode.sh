#!/usr/bin/env bash
# A/B of `mlakv bench decode` between builds on one GPU, in alternating rounds (only pairs from
# one run are comparable: machines of a kind differ by several per cent).
#
#   scripts/ab-decode.sh DIR_A DIR_B [...] -- "case text" ["case text" ...]
#
# Each DIR holds an `mlakv` built for sm_90a; the case texts go to `--only`. ROUNDS (default 2)
# rounds; results to $OUT/ab.log and $OUT/ab-<dir name>-<round>.json, then one line per case
# with each build's median over the rounds (scripts/perf_tables.py ab).
set -u -o pipefail
OUT="${OUT:-$PWD/ab-out}"
mkdir -p "$OUT"
rm -f "$OUT"/ab-*.json  # the table below reads every ab-*.json here: none from an earlier run
dirs=()
while [[ $# -gt 0 && "$1" != "--" ]]; do dirs+=("$1"); shift; done
shift
only=()
for c in "$@"; do only+=(--only "$c"); done
for r in $(seq 1 "${ROUNDS:-2}"); do
  for d in "${dirs[@]}"; do
    echo "==== round $r: $d" >>"$OUT/ab.log"
    "$d/mlakv" bench decode "${only[@]}" --json "$OUT/ab-$(basename "$d")-$r.json" >>"$OUT/ab.log" 2>&1 ||
      echo "bench failed: $d round $r" | tee -a "$OUT/ab.log"
  done
done
# Builds in the order given, so that "last / first" is the last DIR against the first.
files=()
for d in "${dirs[@]}"; do files+=("$OUT/ab-$(basename "$d")"-*.json); done
python3 "$(dirname "$0")/perf_tables.py" ab "${files[@]}" | tee -a "$OUT/ab.log"
