#!/usr/bin/env bash
# session 26, call 6 (after nine refused starts, trimmed to the device time left): m26e — the
# register-operand form as fp8's default at 16 rows, V on the integer pipes (v4): its tests (both
# forms), every decode test, then one A/B round against the widened form and v3 (m26c, all-cvt).
set -u
tar xzf .gl/b26f.tgz; N=.gl/m26e; O=.gl/m26c; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 100 $N/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form*' > /tmp/z/t1.log 2>&1
rc=$?; echo "fp8 form tests rc=$rc t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Which is|expected" /tmp/z/t1.log | head -20 | tee -a $OUT/summary.log
timeout 170 $N/mlakv_tests --gtest_filter='*CudaDecode*:DecodeSplit.*-Forms/CudaDecodeFp8Form*' > /tmp/z/tests.log 2>&1
echo "decode tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|^\[       OK" /tmp/z/tests.log | cut -c1-90 | tail -45 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=1 AB_TIMEOUT=40 scripts/ab-decode.sh $N $N@MLAKV_DECODE_FP8_FORM=widen $O@MLAKV_DECODE_FP8_FORM=rs -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=128 H=16 ctx=65536' 'fp8 B=1 H=16 ctx=65536' >/dev/null 2>&1
tail -7 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "end t=$SECONDS" | tee -a $OUT/summary.log
