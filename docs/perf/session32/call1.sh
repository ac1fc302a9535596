#!/usr/bin/env bash
# session 32, call 1: bundle .gl/b32.tgz (packed with -C .gl: m32/ w3/ lz/ w3lz/) —
#   m32 = main (two consumer warpgroups, every tile's maxima exchanged); w3 = three consumer
#   warpgroups at 16 rows, fp8 and fp8_ds_mla (-DMLAKV_DECODE_WG3=2, setmaxnreg 24 / 160;
#   fp8_ds_mla with its scales read where used, commit "fp8_ds_mla's tile scales ...");
#   lz = lazy rescaling (-DMLAKV_DECODE_LAZY=1); w3lz = both.
# The form and NaN tests on w3lz and lz first, the A/B over the 16-row shapes, w3lz under
# memcheck and racecheck, then the rest of the decode suite on w3lz, each in the time left.
set -u
LIMIT=${LIMIT:-580}
tar xzf .gl/b32.tgz -C .gl; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
S=$OUT/summary.log
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv | tee $S
for v in w3 lz w3lz; do cmp -s .gl/m32/mlakv .gl/$v/mlakv && echo "ERROR: $v is m32" | tee -a $S; done
F='Forms/CudaDecodeFp8Form.*:CudaDecode.OneNan*:CudaDecode.MaskedTokens*:CudaDecode.Fp8*:CudaDecode.FusedSmallBatch:CudaDecode.ManyShortRequests'
for v in w3lz lz; do
  timeout 120 .gl/$v/mlakv_tests --gtest_filter="$F" > $OUT/tests-$v.log 2>&1
  echo "$v tests rc=$? t=$SECONDS" | tee -a $S
  grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Expected|Which is|case:" $OUT/tests-$v.log | cut -c1-160 | head -12 | tee -a $S
done
[ $(left) -gt 150 ] && OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m32 .gl/w3 .gl/lz .gl/w3lz -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=32 H=16 ctx=8192' \
  'fp8 B=8 H=16 ctx=1024' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8_ds_mla B=1 H=16 ctx=65536' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -10 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
[ $(left) -gt 40 ] && timeout 30 compute-sanitizer --tool racecheck .gl/w3lz/mlakv bench decode --iters 1 --only 'fp8 B=8 H=16 ctx=1024' --only 'fp8_ds_mla B=8 H=16 ctx=1024' > $OUT/racecheck.log 2>&1
echo "racecheck rc=$? t=$SECONDS" | tee -a $S; tail -1 $OUT/racecheck.log | tee -a $S
[ $(left) -gt 90 ] && timeout 120 compute-sanitizer --tool memcheck .gl/w3lz/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs:CudaDecode.OneNan*' > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -3 $OUT/memcheck.log | tee -a $S
[ $(left) -gt 60 ] && timeout $(( $(left) - 15 )) .gl/w3lz/mlakv_tests --gtest_filter="CudaDecode*:-$F" > $OUT/suite-w3lz.log 2>&1
echo "suite rc=$? t=$SECONDS" | tee -a $S; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|\[ RUN" $OUT/suite-w3lz.log | tail -4 | tee -a $S
echo "end t=$SECONDS" | tee -a $S
