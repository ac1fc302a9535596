#!/usr/bin/env bash
# session 26, call 6 (after eight refused starts, trimmed to the budget left): m26e — the
# register-operand form as fp8's default at 16 rows, V on the integer pipes (v4): its tests (both
# forms), one A/B round against the widened form and v3 (m26c, all-cvt), the full decode bench,
# every decode test, memcheck of the form's test.
set -u
tar xzf .gl/b26f.tgz; N=.gl/m26e; O=.gl/m26c; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 100 $N/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form*' > /tmp/z/t1.log 2>&1
rc=$?; echo "fp8 form tests rc=$rc t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Which is|expected" /tmp/z/t1.log | head -20 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=1 AB_TIMEOUT=40 scripts/ab-decode.sh $N $N@MLAKV_DECODE_FP8_FORM=widen $O@MLAKV_DECODE_FP8_FORM=rs -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=128 H=16 ctx=65536' 'fp8 B=1 H=16 ctx=65536' >/dev/null 2>&1
tail -7 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
if [ $rc -eq 0 ]; then B=$N/mlakv; else B="env MLAKV_DECODE_FP8_FORM=rs $O/mlakv"; fi
timeout 90 $B bench decode --json $OUT/decode.json > /tmp/z/bench.log 2>&1
echo "bench ($B) rc=$? t=$SECONDS" | tee -a $OUT/summary.log; head -24 /tmp/z/bench.log | tee -a $OUT/summary.log
timeout 200 $N/mlakv_tests --gtest_filter='*CudaDecode*:DecodeSplit.*' > /tmp/z/tests.log 2>&1
echo "decode tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests.log | head -20 | tee -a $OUT/summary.log
cp /tmp/z/tests.log $OUT/ 2>/dev/null
timeout 90 compute-sanitizer --tool memcheck --error-exitcode 1 $N/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.SixteenRowCtasMatchReference/rs' > /tmp/z/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "ERROR SUMMARY|PASSED|FAILED" /tmp/z/memcheck.log | head -3 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
