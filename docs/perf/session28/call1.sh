#!/usr/bin/env bash
# session 28, call 1: m27g = main + the register-operand form at 32 rows (branch rs32, opt-in
# MLAKV_DECODE_FP8_FORM=rs): its form test at 16 and 32 rows; an A/B against m27f (main: widened
# at 32 rows) on the DCP-local shapes; if the test passes, every decode test with the form on,
# racecheck and memcheck of it; ncu stall reasons of main's 16-row register-operand tile.
set -u
tar xzf .gl/b27g.tgz; F=.gl/m27f-cli; G=.gl/m27g; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 100 $G/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs' > $OUT/tests.log 2>&1
rc=$?; echo "m27g form test rc=$rc t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|^\[       OK" $OUT/tests.log | cut -c1-100 | tail -12 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $F $G@MLAKV_DECODE_FP8_FORM=rs -- 'fp8 B=64 H=32 ctx=32768' 'fp8 B=8 H=32 ctx=65536' 'fp8 B=128 H=32 ctx=4096' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ 2>/dev/null; tail -6 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "ab t=$SECONDS" | tee -a $OUT/summary.log
timeout 40 ncu -k regex:mla_decode_sm90_kernel --launch-skip 5 --launch-count 1 --section WarpStateStats --section SourceCounters \
  --section SchedulerStats $F/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' --iters 3 > $OUT/ncu-stalls-m27f.txt 2>&1
echo "ncu rc=$? t=$SECONDS" | tee -a $OUT/summary.log
if [ $rc -eq 0 ]; then
  timeout 60 compute-sanitizer --tool racecheck env MLAKV_DECODE_FP8_FORM=rs $G/mlakv bench decode --iters 1 --only 'fp8 B=8 H=32 ctx=1024' > $OUT/racecheck-m27g.log 2>&1
  echo "racecheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "RACECHECK SUMMARY" $OUT/racecheck-m27g.log | tee -a $OUT/summary.log
  MLAKV_DECODE_FP8_FORM=rs timeout 240 $G/mlakv_tests --gtest_filter='CudaDecode.*:DecodeSplit.*' > $OUT/tests-all-rs.log 2>&1
  echo "all decode tests (rs) rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]" $OUT/tests-all-rs.log | cut -c1-100 | tail -12 | tee -a $OUT/summary.log
  left=$((560 - SECONDS)); [ $left -gt 30 ] && timeout $left compute-sanitizer --tool memcheck --error-exitcode 1 $G/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs' > /tmp/z/memcheck.log 2>&1
  echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "ERROR SUMMARY|PASSED|FAILED" /tmp/z/memcheck.log | head -5 | tee -a $OUT/summary.log
fi
