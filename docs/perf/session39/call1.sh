#!/usr/bin/env bash
# Prepared in session 38 (whose device time ran out in refused starts) for session 39's first
# call. Bundle .gl/s38c.txz (-C .gl): m38 = main's kernels (7d47679; mlakv, mlakv_tests: build-cuda
# at main); mg2n = main + docs/perf/session38/merge.patch (the in-grid merge in column slices,
# tagged counters, no zeroing grid; the merge out of line); mg2 = the same with merge_part
# __forceinline__ instead of __noinline__. To rebuild: `git apply` the patch, build, copy, edit,
# build, copy, `git checkout src tests`.
#   1. A/B m38 / mg2 / mg2 merge / mg2n / mg2n merge (MLAKV_DECODE_FUSED=merge) at B <= 32, and
#      two B=128 rows where every build's default path must equal m38's.
#   2. mg2n's fused-path tests (default and merge), the RS tiles-in-flight test, memcheck on two.
#   3. On an H200: the RS producer at 1 and 2 tiles in flight, m38's full bench (decode-h200.json).
# LEAN=1 (session 39, for when less than ~700 s of device time is left; LIMIT=330): the merge's
# own tests only, memcheck on one, no H200 extras.
set -u
BUNDLE=${BUNDLE:-.gl/s38c.txz} LIMIT=${LIMIT:-560}
. scripts/call-lib.sh
call_start $BUNDLE
call_ab ab .gl/m38 .gl/mg2 .gl/mg2@MLAKV_DECODE_FUSED=merge .gl/mg2n .gl/mg2n@MLAKV_DECODE_FUSED=merge -- \
  'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=16 ctx=1024' 'bf16 B=1 H=128 ctx=32768' 'fp8 B=1 H=16 ctx=65536' \
  'fp8_ds_mla B=1 H=128 ctx=32768' 'bf16 B=8 H=16 ctx=8192' 'bf16 B=8 H=128 ctx=8192' \
  'fp8 B=32 H=16 ctx=1024' 'bf16 B=32 H=128 ctx=1024' 'bf16 B=128 H=128 ctx=4096' 'fp8 B=128 H=16 ctx=4096'
merge_tests='CudaDecode.Fused*:CudaDecode.InGridMerge*:CudaDecode.StepsInARow*:CudaDecode.Graph*:CudaDecode.DcpShards'
if [ "${LEAN:-0}" = 1 ]; then
  call_tests .gl/mg2n/mlakv_tests $OUT/tests-mg2n.log "$merge_tests" $(( $(left) - 45 ))
  call_memcheck .gl/mg2n/mlakv_tests 'CudaDecode.InGridMergeTakesAnyWorkspace' 35
  call_end
  exit 0
fi
call_tests .gl/mg2n/mlakv_tests $OUT/tests-mg2n.log "$merge_tests:CudaDecode.RsTilesInFlight*:Forms/*" 230
call_memcheck .gl/mg2n/mlakv_tests 'CudaDecode.InGridMergeTakesAnyWorkspace:CudaDecode.FusedGraphReplayBackToBack' 60
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  [ $(left) -gt 80 ] && call_ab ab-inflight .gl/m38 .gl/m38@MLAKV_DECODE_RS_INFLIGHT=2 -- \
    'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=1 H=16 ctx=65536' \
    'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8 B=64 H=32 ctx=32768'
  [ $(left) -gt 60 ] && timeout 50 .gl/m38/mlakv bench decode --json $OUT/decode-h200.json > /tmp/z/n/bench-m38.log 2>&1
  echo "bench m38 rc=$? t=$SECONDS" | tee -a "$S"
fi
call_end
