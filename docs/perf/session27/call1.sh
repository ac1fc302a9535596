#!/usr/bin/env bash
# session 27, call 1: main + NaN rows (m27a) — the tests the register-operand form had not run
# (plain), the NaN-row tests, memcheck on the fp8 16-row form and the NaN test, racecheck on small
# fp8 16-row decodes, then a full `bench decode --json`.
set -u
tar xzf .gl/b27a.tgz; N=.gl/m27a; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv | tee $OUT/summary.log
timeout 170 $N/mlakv_tests --gtest_filter='*OneNan*:*MaskedTokensNever*:Forms/CudaDecodeFp8Form*:*LockStepManyRequestsPerPart:*ClusteredRowTilePairs*:Forms/CudaDecodeForm*:*StepWaitsForTheKernelBeforeIt*' > $OUT/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|^\[       OK" $OUT/tests.log | cut -c1-100 | tail -30 | tee -a $OUT/summary.log
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 1 $N/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.SixteenRowCtasMatchReference/rs:*OneNan*' > /tmp/z/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "ERROR SUMMARY|PASSED|FAILED" /tmp/z/memcheck.log | head -5 | tee -a $OUT/summary.log
timeout 90 compute-sanitizer --tool racecheck --error-exitcode 1 $N/mlakv bench decode --iters 1 --only 'fp8 B=1 H=16 ctx=1024' --only 'fp8 B=8 H=16 ctx=1024' > /tmp/z/racecheck.log 2>&1
echo "racecheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "RACECHECK SUMMARY|hazard|Error" /tmp/z/racecheck.log | head -8 | tee -a $OUT/summary.log
timeout 150 $N/mlakv bench decode --json $OUT/decode.json > $OUT/bench.log 2>&1
echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log
