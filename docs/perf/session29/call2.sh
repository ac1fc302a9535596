#!/usr/bin/env bash
# session 29, call 2: ds29 = branch ds-rs (rs32-next + fp8_ds_mla at 16 rows in the register-operand
# form, opt-in MLAKV_DECODE_FP8_FORM=rs). Its form tests (fp8 and fp8_ds_mla, rs), an A/B of the
# two ds forms at 16 rows, then memcheck / racecheck of the ds form.
set -u
LIMIT=${LIMIT:-400}
tar xzf .gl/b29a.tgz; D=.gl/ds29; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 120 $D/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs' > $OUT/tests-ds29.log 2>&1
echo "form tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Expected|Which is|actual" $OUT/tests-ds29.log | cut -c1-160 | head -30 | tee -a $OUT/summary.log
[ $(left) -gt 60 ] && OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=30 scripts/ab-decode.sh $D@MLAKV_DECODE_FP8_FORM=widen $D@MLAKV_DECODE_FP8_FORM=rs -- \
  'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8_ds_mla B=1 H=16 ctx=65536' 'fp8_ds_mla B=8 H=16 ctx=8192' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; tail -6 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "ab t=$SECONDS" | tee -a $OUT/summary.log
[ $(left) -gt 40 ] && timeout 40 compute-sanitizer --tool racecheck env MLAKV_DECODE_FP8_FORM=rs $D/mlakv bench decode --iters 1 --only 'fp8_ds_mla B=8 H=16 ctx=1024' > $OUT/racecheck.log 2>&1
echo "racecheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -2 $OUT/racecheck.log | tee -a $OUT/summary.log
[ $(left) -gt 60 ] && MLAKV_DECODE_FP8_FORM=rs timeout $(( $(left) - 10 )) compute-sanitizer --tool memcheck $D/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.DsMla*/rs' > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -3 $OUT/memcheck.log | tee -a $OUT/summary.log
