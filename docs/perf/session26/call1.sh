#!/usr/bin/env bash
# session 26, call 1: the register-operand fp8 form (MLAKV_DECODE_FP8_FORM=rs): its test, an A/B
# against the widened form in one binary, and its test under memcheck.
set -u
tar xzf .gl/b26a.tgz; N=.gl/m26a; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 150 $N/mlakv_tests --gtest_filter='CudaDecode.Fp8RegisterOperandFormMatchesReference' > /tmp/z/t1.log 2>&1
echo "rs test rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|rror|Which is|expected" /tmp/z/t1.log | head -20 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $N $N@MLAKV_DECODE_FP8_FORM=rs -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=128 H=16 ctx=65536' 'fp8 B=1 H=16 ctx=65536' \
  'fp8 B=8 H=16 ctx=65536' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=128 H=16 ctx=1024' >/dev/null 2>&1
tail -10 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
MLAKV_DECODE_FP8_FORM=rs timeout 200 $N/mlakv_tests --gtest_filter='CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference:CudaDecode.Fp8QueriesWithOutlierChannels:CudaDecode.FormatsHeadsQueries:CudaDecode.BlockSizes:CudaDecode.FusedSmallBatch:CudaDecode.GraphCaptureFollowsDeviceLengths:CudaDecode.DcpShards:CudaDecode.BadBlockIdsAreMaskedNotRead' > /tmp/z/t2.log 2>&1
echo "env-rs tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/t2.log | head -20 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
