#!/usr/bin/env bash
# Prepared in session 37 for session 38's first call. Bundle .gl/s38.txz (-C .gl): m38 = main at
# 7d47679 (mlakv, mlakv_tests), f128 = m38 + docs/perf/session37/fused128.patch (the fused path
# up to 128 requests on the 16- and 32-row forms; mlakv, mlakv_tests). To rebuild: build-cuda's
# binaries at main (the library and kernels are 7d47679's; later commits add one test and docs),
# then with the patch applied (`git apply`, rebuild, `git checkout src tests`).
#   1. m38's decode tests session 37's call 5 had no time for (the fused path takes B <= 32 there).
#   2. A/B m38 / f128 / f128 with MLAKV_DECODE_FUSED=0 (its three grids) at B = 32 to 128.
#   3. f128's decode tests on the fused path and every form that takes it, memcheck on two.
#   4. An H200: the RS producer at 1 and 2 tiles in flight (MLAKV_DECODE_RS_INFLIGHT, m38).
#   5. m38's full bench: decode-h200.json on an H200, else decode.json.
set -u
BUNDLE=${BUNDLE:-.gl/s38.txz} LIMIT=${LIMIT:-560}
. scripts/call-lib.sh
call_start $BUNDLE
call_tests .gl/m38/mlakv_tests $OUT/tests-m38.log \
  'CudaDecode.ReferenceVectors:CudaDecode.Fp8RowTilePairsMatchReference:Forms/*:CudaDecode.StepWaitsForTheKernelBeforeIt' 150
call_ab ab .gl/m38 .gl/f128 .gl/f128@MLAKV_DECODE_FUSED=0 -- \
  'fp8 B=128 H=16 ctx=4096' 'bf16 B=128 H=16 ctx=4096' 'fp8 B=128 H=16 ctx=1024' 'bf16 B=128 H=16 ctx=1024' \
  'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'bf16 B=64 H=16 ctx=16384' 'fp8 B=64 H=32 ctx=32768' \
  'fp8 B=32 H=16 ctx=1024' 'bf16 B=32 H=128 ctx=1024' 'bf16 B=128 H=128 ctx=4096'
call_tests .gl/f128/mlakv_tests $OUT/tests-f128.log \
  'CudaDecode.Fused*:CudaDecode.Graph*:CudaDecode.StepsInARow*:CudaDecode.ManyShortRequests:CudaDecode.NearEqual*:CudaDecode.AlignedSplits*:CudaDecode.DcpShards:CudaDecode.FormatsHeadsQueries:CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.QueryE4m3*:CudaDecode.OneNan*:CudaDecode.MaskedTokens*:CudaDecode.Sm90SplitRowsPlainLaunches:CudaDecode.ReferenceVectors' 200
call_memcheck .gl/f128/mlakv_tests 'CudaDecode.FusedGraphReplayBackToBack:CudaDecode.BadBlockIds*' 40
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  call_ab ab-inflight .gl/m38 .gl/m38@MLAKV_DECODE_RS_INFLIGHT=2 -- \
    'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=1 H=16 ctx=65536' \
    'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8 B=64 H=32 ctx=32768'
  J=decode-h200.json
else
  J=decode.json
fi
[ $(left) -gt 45 ] && timeout 45 .gl/m38/mlakv bench decode --json $OUT/$J > /tmp/z/n/bench-m38.log 2>&1
echo "bench m38 rc=$? t=$SECONDS ($J)" | tee -a $S
call_end
