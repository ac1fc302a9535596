#!/usr/bin/env bash
# An A/B variant of the decode kernels for a device call: src/cuda/mla_decode.cu recompiled with
# extra nvcc flags (e.g. -DMLAKV_DECODE_LAZY=0) into a copy of the CUDA build's libmlakv.a, then
# mlakv (and with TESTS=1 mlakv_tests) relinked against it, into .gl/NAME with BUILT_FROM (for
# scripts/pack-binaries.sh). The variant's ptxas lines are checked as it compiles: spills are
# listed, and a kernel whose wgmma ptxas serialized (C7512) fails the build unless
# ALLOW_C7512=1; so does a variant whose mlakv is byte-identical to the base's (flags that
# changed nothing).
#
#   [BUILD=build-cuda] [TESTS=1] scripts/build-variant.sh NAME [NVCC_FLAGS...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
B="$(cd "${BUILD:-$root/build-cuda}" && pwd)"
name="$1"
shift
out="$root/.gl/$name"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
cd "$B"
targets=(mlakv)
[[ -n "${TESTS:-}" ]] && targets+=(mlakv_tests)
ninja "${targets[@]}" >/dev/null  # the base, up to date
src="$root/src/cuda/mla_decode.cu"
compile="$(ninja -t commands mlakv | grep -F -- "-c $src" | tail -1)"
[[ -n "$compile" ]] || { echo "build-variant: no compile command for $src in $B" >&2; exit 1; }
# Without the depfile flags (they would rewrite the base build's), into the work folder, with
# ptxas's full account.
compile="$(sed -E 's/ -MD -MT [^ ]+ -MF [^ ]+//; s# -o [^ ]+# -o '"$work"'/mla_decode.cu.o#' <<<"$compile")"
[[ "$compile" == *"-o $work/mla_decode.cu.o"* && "$compile" != *" -MF "* ]] || { echo "build-variant: unexpected compile command: $compile" >&2; exit 1; }
nvcc_bin="${compile%% *}"
set -f  # the command's code=[…] lists are not globs
extra=""
(($#)) && extra="$(printf '%q ' "$@")"  # none: a variant of the working tree's sources
eval "$nvcc_bin $extra -Xptxas=-v ${compile#* }" >"$work/ptxas.log" 2>&1 || { cat "$work/ptxas.log" >&2; exit 1; }
set +f
grep -E "bytes spill stores" "$work/ptxas.log" | grep -v " 0 bytes spill stores" | sed 's/^ */spill: /' || true
if grep -q C7512 "$work/ptxas.log"; then
  grep C7512 "$work/ptxas.log" | sed -E "s/.*function '([^']+)'.*/\1/" | c++filt | sed 's/^/C7512 (wgmma serialized): /' >&2
  [[ -n "${ALLOW_C7512:-}" ]] || { echo "build-variant: $name serializes wgmma (ALLOW_C7512=1 to build it anyway)" >&2; exit 1; }
fi
cp libmlakv.a "$work/libmlakv.a"
ar r "$work/libmlakv.a" "$work/mla_decode.cu.o"
for t in "${targets[@]}"; do
  link="$(ninja -t commands "$t" | tail -1)"
  link="${link//" libmlakv.a "/" $work/libmlakv.a "}"
  link="${link//"-o $t "/"-o $out/$t "}"
  bash -c "$link"
done
if cmp -s "$out/mlakv" "$B/mlakv"; then
  echo "build-variant: $name's mlakv is identical to the base's: the flags changed nothing" >&2
  exit 1
fi
# ptxas can also serialize wgmma without a word (session 34: a tile loop whose live accumulators
# left no room for the register sets got a wait after every wgmma, and no C7512): a kernel with
# more full waits (WARPGROUP.DEPBAR.LE gsb0, 0x0) than a quarter of its wgmma fails the build
# (main's have at most 8 of 68 to 164). Needs cuobjdump (pip nvidia-cuda-cuobjdump where the
# toolkit lacks it, and pip nvidia-cuda-nvdisasm, which its -sass runs); skipped without. A failed
# disassembly fails the build: under pipefail it would otherwise end this script without a word.
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass "$out/mlakv" >"$work/sass.txt" 2>"$work/sass.err" ||
    { cat "$work/sass.err" >&2; echo "build-variant: cuobjdump -sass failed (nvdisasm on PATH?)" >&2; exit 1; }
  serial="$(awk '
    /Function :/ { if (n && d * 4 > h) print n, h " wgmma", d " full waits"; n = $3; h = 0; d = 0 }
    /HGMMA/ { h++ }
    /WARPGROUP.DEPBAR.LE gsb0, 0x0/ { d++ }
    END { if (n && d * 4 > h) print n, h " wgmma", d " full waits" }' "$work/sass.txt")"
  if [[ -n "$serial" ]]; then
    sed 's/^/serialized wgmma: /' <<<"$serial" | c++filt >&2
    [[ -n "${ALLOW_C7512:-}" ]] || { echo "build-variant: $name waits after its wgmma (ALLOW_C7512=1 to keep it anyway)" >&2; exit 1; }
  fi
else
  echo "build-variant: no cuobjdump, the silent-serialization check skipped" >&2
fi
echo "$(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet || echo '+dirty') $*" >"$out/BUILT_FROM"
echo "built $out ($(cat "$out/BUILT_FROM"))"
