#!/usr/bin/env bash
# session 27, call 2: m27c = three consumer warpgroups + v4 (Vᵀ widened on the integer pipes, K
# on F2FP): its RS and NaN tests, an A/B against m27a (two warpgroups, v3) and m27b (three, v3),
# its trace; racecheck on m27a (does the two-warpgroup merge through the Q tile race too?).
set -u
tar xzf .gl/b27c.tgz; A=.gl/m27a-cli; C=.gl/m27c; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 120 $C/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs:*OneNan*:*MaskedTokensNever*:*LockStepManyRequestsPerPart:*ClusteredRowTilePairs*' > $OUT/tests.log 2>&1
echo "m27c tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|^\[       OK" $OUT/tests.log | cut -c1-100 | tail -12 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $A $C -- 'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ 2>/dev/null; tail -5 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "ab t=$SECONDS" | tee -a $OUT/summary.log
mkdir -p /tmp/z/tc && MLAKV_TRACE_DIR=/tmp/z/tc timeout 40 .gl/m27ctrace/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' > /tmp/z/tc.log 2>&1
python3 .gl/m27ctrace/decode_trace.py /tmp/z/tc/*.bin > $OUT/trace.txt 2>&1; echo "trace t=$SECONDS" | tee -a $OUT/summary.log
timeout 60 compute-sanitizer --tool racecheck $A/mlakv bench decode --iters 1 --only 'fp8 B=8 H=16 ctx=1024' > $OUT/racecheck-m27a.log 2>&1
echo "racecheck m27a rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "RACECHECK SUMMARY" $OUT/racecheck-m27a.log | tee -a $OUT/summary.log
# Which pipe binds: ncu pipe utilisation of the attention kernel, two warpgroups v3 (m27a) and three v4 (m27c).
for v in m27a-cli m27c; do
  timeout 90 ncu -k regex:mla_decode_sm90_kernel --launch-skip 5 --launch-count 1 --section ComputeWorkloadAnalysis --section SchedulerStats \
    --section InstructionStats --metrics 'regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active' \
    .gl/$v/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' --iters 3 > $OUT/ncu-$v.txt 2>&1
  echo "ncu $v rc=$? t=$SECONDS" | tee -a $OUT/summary.log
done
# m27f = main with the three warpgroups reverted (two, v3, the NaN rows): every decode test, memcheck
# on the fp8 16-row form, a full bench decode.
F=.gl/m27f
timeout 200 $F/mlakv_tests --gtest_filter='*CudaDecode*:DecodeSplit.*' > $OUT/tests-m27f.log 2>&1
echo "m27f decode tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]" $OUT/tests-m27f.log | cut -c1-100 | tail -12 | tee -a $OUT/summary.log
timeout 60 compute-sanitizer --tool memcheck --error-exitcode 1 $F/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.SixteenRowCtasMatchReference/rs:*OneNan*' > /tmp/z/memcheck-f.log 2>&1
echo "m27f memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "ERROR SUMMARY|PASSED|FAILED" /tmp/z/memcheck-f.log | head -5 | tee -a $OUT/summary.log
timeout 100 $F/mlakv bench decode --json $OUT/decode.json > $OUT/bench.log 2>&1
echo "m27f bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log
