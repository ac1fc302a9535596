#!/usr/bin/env bash
# session 30, call 1 (prepared in session 29): bundle .gl/b30b.tgz —
#   m29   = main 6bff2c4 (the defaults: register operands for fp8 at 16/32 rows, fp8_ds_mla at 16);
#   s30   = branch s30-next a68fa8d: fp8_ds_mla at 32 rows in the register-operand form (one Q·Kᵀ
#           accumulator, branch ds-rs32) + fp8's next Q·Kᵀ under P·V at 16 rows (branch pipe16);
#   pds   = branch pipe16-ds 61f8153: s30 + the same pipelining for fp8_ds_mla at 16 rows;
#   ds32b = branch ds-rs32-2acc 995f749 (fp8_ds_mla at 32 rows with two accumulators; no pipe16).
# pds's form tests (s30's if pds fails), one A/B over the shapes each change moves, main's full
# bench (on an H200 it is decode-h200.json), the candidate's whole decode suite, SASS samples
# (read them with scripts/sass_stalls.py).
set -u
LIMIT=${LIMIT:-560}
tar xzf .gl/b30b.tgz; M=.gl/m29; N=.gl/s30; P=.gl/pds; B=.gl/ds32b; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
C=$P
for v in $P $N; do
  n=$(basename $v)
  timeout 150 $v/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs' > $OUT/tests-$n.log 2>&1
  rc=$?
  echo "$n form tests rc=$rc t=$SECONDS" | tee -a $OUT/summary.log
  grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Expected|Which is" $OUT/tests-$n.log | cut -c1-160 | head -14 | tee -a $OUT/summary.log
  C=$v
  [ $rc -eq 0 ] && break
done
[ $(left) -gt 90 ] && OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $M $N $P $B -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' \
  'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8_ds_mla B=64 H=32 ctx=32768' 'fp8_ds_mla B=8 H=32 ctx=65536' 'fp8_ds_mla B=128 H=128 ctx=4096' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; tail -10 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "ab t=$SECONDS" | tee -a $OUT/summary.log
[ $(left) -gt 60 ] && timeout 120 $M/mlakv bench decode --json $OUT/decode-m29.json > $OUT/bench-m29.log 2>&1
echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log; sed -n 1,25p $OUT/bench-m29.log | tee -a $OUT/summary.log
t=$(( $(left) - 60 )); [ $t -gt 300 ] && t=300
[ $t -gt 60 ] && timeout $t $C/mlakv_tests --gtest_filter='CudaDecode.*:DecodeSplit.*:Forms/*:CudaMergeStates.*' > $OUT/suite-$(basename $C).log 2>&1
echo "$(basename $C) suite rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |FAILED  \]" $OUT/suite-$(basename $C).log | cut -c1-120 | tail -8 | tee -a $OUT/summary.log
for f in fp8 fp8_ds_mla; do
  [ $(left) -gt 40 ] || break
  timeout 60 ncu --section SourceCounters --section WarpStateStats -k regex:mla_decode_sm90_kernel --launch-skip 3 --launch-count 1 \
    -o /tmp/z/$f -f $C/mlakv bench decode --only "$f B=128 H=16 ctx=4096" --iters 2 > $OUT/ncu-$f.log 2>&1
  timeout 40 ncu --import /tmp/z/$f.ncu-rep --page source --csv --print-source sass > /tmp/z/$f-sass.csv 2>>$OUT/ncu-$f.log
  gzip -c /tmp/z/$f-sass.csv > $OUT/$f-sass.csv.gz
  echo "ncu $f t=$SECONDS $(stat -c %s $OUT/$f-sass.csv.gz)" | tee -a $OUT/summary.log
done
