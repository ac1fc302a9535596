#!/usr/bin/env bash
# ptxas's account of every decode kernel instance in src/cuda/mla_decode.cu for sm_90a, with the
# given extra nvcc flags (e.g. -DMLAKV_DECODE_LAZY=0): registers, spill bytes, and whether ptxas
# serialized its wgmma (C7512, an info line that -Xptxas=-warn-spills never shows). Check every
# A/B build with it before spending device time on it (session 32: a build that serialized every
# wgmma was measured as if it were the idea under test).
#
#   scripts/ptxas-report.sh [NVCC_FLAGS...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
log="$(mktemp)"
trap 'rm -f "$log" "$log.o"' EXIT
"${NVCC:-/usr/local/cuda/bin/nvcc}" -DMLAKV_WITH_CUDA=1 -I"$root/include" -I"$root/src" -O3 -DNDEBUG \
  --generate-code=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -std=c++20 -Xptxas=-v "$@" \
  -x cu -c "$root/src/cuda/mla_decode.cu" -o "$log.o" >"$log" 2>&1 || { cat "$log"; exit 1; }
python3 - "$log" <<'PY'
import re, subprocess, sys
fn, rows, serial = None, {}, set()
for line in open(sys.argv[1]):
    m = re.search(r"(?:Compiling entry function|Function properties for) '?([_A-Za-z0-9]+)'?", line)
    if m:
        fn = m.group(1)
        rows.setdefault(fn, {})
    m = re.search(r"C7512.*function '([_A-Za-z0-9]+)'", line)
    if m:
        serial.add(m.group(1))
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m and fn:
        rows[fn]["spill"] = "%s/%s" % m.groups()
    m = re.search(r"Used (\d+) registers", line)
    if m and fn:
        rows[fn]["regs"] = m.group(1)
names = sorted(rows)
demangled = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.split("\n")
print("| kernel | registers | spill st/ld bytes | C7512 (wgmma serialized) |")
print("|---|---|---|---|")
for n, d in zip(names, demangled):
    if "mla_decode" not in d:
        continue
    d = re.sub(r"mlakv::cuda::mla::|\(mlakv::cuda::mla::DecodeArgs\)|void ", "", d)
    r = rows[n]
    print("| %s | %s | %s | %s |" % (d, r.get("regs", "?"), r.get("spill", "?"), "YES" if n in serial else "no"))
PY
