#!/usr/bin/env bash
# session 28, call 4 (not run: too little device time; the next session's first call): the
# register-operand form at 32 rows with its Q-tile fix, on main's code (r28c = branch rs32-next
# 98aafcb): the form test at 16 and 32 rows with that form, one A/B round against main (m27f) at H=32.
set -u
LIMIT=${LIMIT:-140}
tar xzf .gl/b28c.tgz; F=.gl/m27f-cli; C=.gl/r28c; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 75 $C/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs' > $OUT/tests.log 2>&1
echo "r28c form test rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|^\[       OK" $OUT/tests.log | cut -c1-100 | tail -6 | tee -a $OUT/summary.log
grep -E "^  fp8" $OUT/tests.log | cut -c1-100 | tail -30 > $OUT/errors.log
left=$((LIMIT - SECONDS)); [ $left -gt 30 ] && OUT=/tmp/z/ab ROUNDS=1 AB_TIMEOUT=25 scripts/ab-decode.sh $F $C@MLAKV_DECODE_FP8_FORM=rs -- 'fp8 B=64 H=32 ctx=32768' 'fp8 B=8 H=32 ctx=65536' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ 2>/dev/null; tail -4 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "ab t=$SECONDS" | tee -a $OUT/summary.log
