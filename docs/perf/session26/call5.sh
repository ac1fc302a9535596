#!/usr/bin/env bash
# session 26, call 5: the rs form with V on the integer pipes (m26d) — its test, an A/B
# against the widened form and the all-cvt fp16 version (m26c), its stamps.
set -u
tar xzf .gl/b26e.tgz; N=.gl/m26d; O=.gl/m26c; TR=.gl/m26dtrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 150 $N/mlakv_tests --gtest_filter='CudaDecode.Fp8RegisterOperandFormMatchesReference' > /tmp/z/t1.log 2>&1
echo "rs test rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Which is|expected" /tmp/z/t1.log | head -20 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $N $O@MLAKV_DECODE_FP8_FORM=rs $N@MLAKV_DECODE_FP8_FORM=rs -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=128 H=16 ctx=65536' 'fp8 B=1 H=16 ctx=65536' \
  'fp8 B=8 H=16 ctx=65536' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=128 H=16 ctx=1024' >/dev/null 2>&1
tail -10 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
d=/tmp/z/tr/rs; mkdir -p $d
MLAKV_DECODE_FP8_FORM=rs MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' --iters 20 > $d.log 2>&1
echo "trace rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -1 $d.log | tee -a $OUT/summary.log; cp $d/*.bin $OUT/trace-rs.bin
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
MLAKV_DECODE_FP8_FORM=rs timeout 200 $N/mlakv_tests --gtest_filter='CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference:CudaDecode.Fp8QueriesWithOutlierChannels:CudaDecode.FormatsHeadsQueries:CudaDecode.BlockSizes:CudaDecode.FusedSmallBatch:CudaDecode.GraphCaptureFollowsDeviceLengths:CudaDecode.DcpShards:CudaDecode.BadBlockIdsAreMaskedNotRead:CudaDecode.QueryE4m3OutF32StridedNonCausal:CudaDecode.ReferenceVectors' > /tmp/z/t2.log 2>&1
echo "env-rs tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/t2.log | head -20 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
MLAKV_DECODE_FP8_FORM=rs timeout 240 compute-sanitizer --tool memcheck --error-exitcode 1 $N/mlakv_tests --gtest_filter='CudaDecode.Fp8RegisterOperandFormMatchesReference' > /tmp/z/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "ERROR SUMMARY|PASSED|FAILED" /tmp/z/memcheck.log | head -3 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
