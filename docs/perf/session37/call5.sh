#!/usr/bin/env bash
# Session 37, call 5: the fused path (no schedule grid) up to 32 requests (fz = main + kFusedMaxBatch
# 32, with mlakv_tests) against its own three-kernel path (MLAKV_DECODE_FUSED=0, the same binary)
# and m37 (main); fz's decode tests, the B <= 32 ones first, memcheck on the fused ones.
#   Bundle .gl/b41.txz (-C .gl): fz (mlakv, mlakv_tests), m37 (mlakv).
set -u
BUNDLE=${BUNDLE:-.gl/b41.txz} LIMIT=${LIMIT:-330}
. scripts/call-lib.sh
call_start $BUNDLE
OUT=/tmp/z/ab ROUNDS=${ROUNDS:-3} AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m37 .gl/fz .gl/fz@MLAKV_DECODE_FUSED=0 -- \
  'bf16 B=32 H=16 ctx=1024' 'bf16 B=32 H=16 ctx=8192' 'fp8 B=32 H=16 ctx=1024' 'fp8 B=32 H=16 ctx=8192' \
  'fp8_ds_mla B=32 H=16 ctx=1024' 'bf16 B=32 H=128 ctx=1024' 'bf16 B=32 H=128 ctx=8192' 'fp8 B=32 H=128 ctx=1024' \
  'fp8 B=32 H=16 ctx=65536' 'bf16 B=128 H=16 ctx=4096' 'fp8 B=128 H=16 ctx=4096' 'fp8 B=8 H=16 ctx=1024' \
  'bf16 B=1 H=16 ctx=65536' >/dev/null 2>&1
cp /tmp/z/ab/ab.log /tmp/z/n/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -15 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
F1='CudaDecode.Fused*:CudaDecode.Graph*:CudaDecode.ClusteredPairsInACapturedGraph:CudaDecode.StepsInARow*:CudaDecode.ManyShortRequests:CudaDecode.NearEqual*:CudaDecode.AlignedSplits*:CudaDecode.LockStep*:CudaDecode.DcpShards:CudaDecode.FormatsHeadsQueries:CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.QueryE4m3*:CudaDecode.MaskedTokens*:CudaDecode.OneNan*:CudaDecode.MmaKernelPath:CudaDecode.Sm90SplitRowsPlainLaunches'
timeout $(( $(left) - 75 )) .gl/fz/mlakv_tests --gtest_filter="$F1" > $OUT/tests-fz.log 2>&1
echo "fz tests rc=$? t=$SECONDS" | tee -a $S
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure" $OUT/tests-fz.log | head -8 | tee -a $S
[ $(left) -gt 30 ] && timeout $(( $(left) - 10 )) compute-sanitizer --tool memcheck .gl/fz/mlakv_tests \
  --gtest_filter='CudaDecode.FusedGraphReplayBackToBack:CudaDecode.GraphCaptureFollowsDeviceLengths:CudaDecode.BadBlockIds*' > /tmp/z/n/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -2 /tmp/z/n/memcheck.log | tee -a $S
[ $(left) -gt 20 ] && timeout $(( $(left) - 5 )) .gl/fz/mlakv_tests --gtest_filter="*CudaDecode*:-$F1" > /tmp/z/n/tests-fz-rest.log 2>&1
echo "fz other tests rc=$? t=$SECONDS" | tee -a $S; grep -cE "^\[       OK" /tmp/z/n/tests-fz-rest.log | tee -a $S; grep -E "FAILED|Failure" /tmp/z/n/tests-fz-rest.log | head -3 | tee -a $S
call_end
