#!/usr/bin/env bash
# session 30, call 1 (prepared in session 29): bundle .gl/b30a.tgz —
#   m29   = main 6bff2c4 (the defaults: register operands for fp8 at 16/32 rows, fp8_ds_mla at 16);
#   ds32a = branch ds-rs32 f23c8c2 (fp8_ds_mla at 32 rows too, one Q·Kᵀ accumulator);
#   ds32b = branch ds-rs32-2acc 995f749 (the same with two accumulators).
# The ds form tests of both branches, an A/B at 32 rows (H=32 DCP-local, H=128's 32-row CTAs),
# then main's full bench (decode-h200.json on an H200), SASS stall samples, main's form tests.
set -u
LIMIT=${LIMIT:-560}
tar xzf .gl/b30a.tgz; M=.gl/m29; A=.gl/ds32a; B=.gl/ds32b; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
for v in $A $B; do
  n=$(basename $v)
  timeout 120 $v/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.DsMla*/rs' > $OUT/tests-$n.log 2>&1
  echo "$n ds form test rc=$? t=$SECONDS" | tee -a $OUT/summary.log
  grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Expected|Which is" $OUT/tests-$n.log | cut -c1-160 | head -12 | tee -a $OUT/summary.log
done
[ $(left) -gt 80 ] && OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $M $A $B -- \
  'fp8_ds_mla B=64 H=32 ctx=32768' 'fp8_ds_mla B=8 H=32 ctx=65536' 'fp8_ds_mla B=128 H=128 ctx=4096' 'fp8_ds_mla B=1 H=128 ctx=32768' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; tail -6 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "ab t=$SECONDS" | tee -a $OUT/summary.log
[ $(left) -gt 60 ] && timeout 120 $M/mlakv bench decode --json $OUT/decode.json > $OUT/bench.log 2>&1
echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log; sed -n 1,25p $OUT/bench.log | tee -a $OUT/summary.log
for f in fp8_ds_mla fp8; do
  [ $(left) -gt 60 ] || break
  timeout 90 ncu --section SourceCounters --section WarpStateStats -k regex:mla_decode_sm90_kernel --launch-skip 3 --launch-count 1 \
    -o /tmp/z/$f -f $M/mlakv bench decode --only "$f B=128 H=16 ctx=4096" --iters 2 > $OUT/ncu-$f.log 2>&1
  timeout 60 ncu --import /tmp/z/$f.ncu-rep --page source --csv --print-source sass > /tmp/z/$f-sass.csv 2>>$OUT/ncu-$f.log
  gzip -c /tmp/z/$f-sass.csv > $OUT/$f-sass.csv.gz
  echo "ncu $f t=$SECONDS $(stat -c %s $OUT/$f-sass.csv.gz)" | tee -a $OUT/summary.log
done
[ $(left) -gt 60 ] && timeout $(( $(left) - 10 )) $M/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*' > $OUT/tests-m29-forms.log 2>&1
echo "m29 form tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |FAILED  \]" $OUT/tests-m29-forms.log | cut -c1-120 | tail -6 | tee -a $OUT/summary.log
