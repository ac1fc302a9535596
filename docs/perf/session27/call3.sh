#!/usr/bin/env bash
# session 27, call 3: m27g = main + the register-operand form at 32 rows (opt-in, FP8_FORM=rs):
# both forms' tests at 16 and 32 rows, then an A/B against m27f (main, widened at 32 rows).
set -u
tar xzf .gl/b27g.tgz; F=.gl/m27f-cli; G=.gl/m27g; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 80 $G/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs' > $OUT/tests.log 2>&1
echo "m27g tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|^\[       OK" $OUT/tests.log | cut -c1-100 | tail -12 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=1 AB_TIMEOUT=30 scripts/ab-decode.sh $F $G@MLAKV_DECODE_FP8_FORM=rs -- 'fp8 B=64 H=32 ctx=32768' 'fp8 B=8 H=32 ctx=65536' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ 2>/dev/null; tail -5 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "ab t=$SECONDS" | tee -a $OUT/summary.log
