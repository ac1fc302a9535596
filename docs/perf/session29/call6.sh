#!/usr/bin/env bash
# session 29, call 6: main 6bff2c4 (the register-operand form the default for fp8 at 16/32 rows and
# fp8_ds_mla at 16): the full `bench decode` (decode-h200.json where the card is an H200), the
# form tests with the defaults, SASS-level stall samples of the fp8_ds_mla and fp8 16-row tiles,
# then the decode suite with the defaults.
set -u
LIMIT=${LIMIT:-400}
tar xzf .gl/b29m.tgz; M=.gl/m29; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 120 $M/mlakv bench decode --json $OUT/decode.json > $OUT/bench.log 2>&1
echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log; sed -n 1,25p $OUT/bench.log | tee -a $OUT/summary.log
for f in fp8_ds_mla fp8; do
  [ $(left) -gt 40 ] || break
  timeout 90 ncu --section SourceCounters --section WarpStateStats -k regex:mla_decode_sm90_kernel --launch-skip 3 --launch-count 1 \
    -o /tmp/z/$f -f $M/mlakv bench decode --only "$f B=128 H=16 ctx=4096" --iters 2 > $OUT/ncu-$f.log 2>&1
  timeout 60 ncu --import /tmp/z/$f.ncu-rep --page source --csv --print-source sass > /tmp/z/$f-sass.csv 2>>$OUT/ncu-$f.log
  gzip -c /tmp/z/$f-sass.csv > $OUT/$f-sass.csv.gz
  echo "ncu $f t=$SECONDS $(stat -c %s $OUT/$f-sass.csv.gz)" | tee -a $OUT/summary.log
done
[ $(left) -gt 50 ] && timeout $(( $(left) - 5 )) $M/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*' > $OUT/tests-forms.log 2>&1
echo "form tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |FAILED  \]" $OUT/tests-forms.log | cut -c1-120 | tail -6 | tee -a $OUT/summary.log
t=$(( $(left) - 10 )); [ $t -gt 280 ] && t=280
[ $t -gt 60 ] && timeout $t $M/mlakv_tests --gtest_filter='CudaDecode.*:DecodeSplit.*:CudaMergeStates.*' > $OUT/suite.log 2>&1
echo "suite rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|^\[       OK \]" $OUT/suite.log | cut -c1-120 | tail -8 | tee -a $OUT/summary.log
