#!/usr/bin/env bash
# session 27, call 1: m27a = main + NaN rows; m27b = m27a + three consumer warpgroups in the fp8
# 16-row register-operand form. Tests (m27b: the forms and NaN tests and the shapes session 26
# did not reach; m27a: the NaN tests), an A/B m27b vs m27a, memcheck (form + NaN tests) and
# racecheck (small fp8 16-row decodes) on m27b.
set -u
tar xzf .gl/b27b.tgz; A=.gl/m27a; N=.gl/m27b; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv | tee $OUT/summary.log
timeout 170 $N/mlakv_tests --gtest_filter='*OneNan*:*MaskedTokensNever*:Forms/CudaDecodeFp8Form*:*LockStepManyRequestsPerPart:*ClusteredRowTilePairs*:Forms/CudaDecodeForm*:*StepWaitsForTheKernelBeforeIt*' > $OUT/tests.log 2>&1
echo "m27b tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|^\[       OK" $OUT/tests.log | cut -c1-100 | tail -30 | tee -a $OUT/summary.log
timeout 60 $A/mlakv_tests --gtest_filter='*OneNan*:*MaskedTokensNever*' > /tmp/z/ta.log 2>&1
echo "m27a NaN tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "FAILED  \]|Failure" /tmp/z/ta.log | head -6 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $A $N -- 'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' \
  'fp8 B=128 H=16 ctx=65536' 'fp8 B=8 H=16 ctx=65536' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=128 H=16 ctx=1024' >/dev/null 2>&1
cp /tmp/z/ab/ab.log /tmp/z/ab/ab.json $OUT/ 2>/dev/null; tail -8 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "ab t=$SECONDS" | tee -a $OUT/summary.log
mkdir -p /tmp/z/tb && MLAKV_TRACE_DIR=/tmp/z/tb timeout 40 .gl/m27btrace/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' > /tmp/z/tb.log 2>&1
python3 scripts/decode_trace.py /tmp/z/tb/*.bin > $OUT/trace.txt 2>&1; echo "trace t=$SECONDS" | tee -a $OUT/summary.log
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 1 $N/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.SixteenRowCtasMatchReference/rs:*OneNan*' > /tmp/z/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "ERROR SUMMARY|PASSED|FAILED" /tmp/z/memcheck.log | head -5 | tee -a $OUT/summary.log
timeout 90 compute-sanitizer --tool racecheck --error-exitcode 1 $N/mlakv bench decode --iters 1 --only 'fp8 B=1 H=16 ctx=1024' --only 'fp8 B=8 H=16 ctx=1024' > /tmp/z/racecheck.log 2>&1
echo "racecheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "RACECHECK SUMMARY|hazard|Error" /tmp/z/racecheck.log | head -8 | tee -a $OUT/summary.log
