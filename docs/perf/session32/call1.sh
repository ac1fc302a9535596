#!/usr/bin/env bash
# session 32, call 1: bundle .gl/b32.tgz (packed with -C .gl: m32/ w3/) —
#   m32 = main (two consumer warpgroups); w3 = three consumer warpgroups at 16 rows, fp8 and
#   fp8_ds_mla (-DMLAKV_DECODE_WG3=2, setmaxnreg 24 / 160).
# w3's form and NaN tests first, the A/B over the 16-row shapes, w3 under memcheck and
# racecheck, then the rest of the decode suite on w3, each in the time left.
set -u
LIMIT=${LIMIT:-580}
tar xzf .gl/b32.tgz -C .gl; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
S=$OUT/summary.log
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv | tee $S
cmp -s .gl/m32/mlakv .gl/w3/mlakv && echo "ERROR: w3 is m32" | tee -a $S
timeout 150 .gl/w3/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*:CudaDecode.OneNan*:CudaDecode.MaskedTokens*:CudaDecode.Fp8*:CudaDecode.FusedSmallBatch:CudaDecode.ManyShortRequests' > $OUT/tests-w3.log 2>&1
echo "w3 tests rc=$? t=$SECONDS" | tee -a $S
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Expected|Which is|case:" $OUT/tests-w3.log | cut -c1-160 | head -16 | tee -a $S
[ $(left) -gt 120 ] && OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m32 .gl/w3 -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=32 H=16 ctx=8192' \
  'fp8 B=8 H=16 ctx=1024' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8_ds_mla B=1 H=16 ctx=65536' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -10 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
[ $(left) -gt 40 ] && timeout 30 compute-sanitizer --tool racecheck .gl/w3/mlakv bench decode --iters 1 --only 'fp8 B=8 H=16 ctx=1024' --only 'fp8_ds_mla B=8 H=16 ctx=1024' > $OUT/racecheck.log 2>&1
echo "racecheck rc=$? t=$SECONDS" | tee -a $S; tail -1 $OUT/racecheck.log | tee -a $S
[ $(left) -gt 90 ] && timeout 120 compute-sanitizer --tool memcheck .gl/w3/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs:CudaDecode.OneNan*' > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -3 $OUT/memcheck.log | tee -a $S
[ $(left) -gt 60 ] && timeout $(( $(left) - 15 )) .gl/w3/mlakv_tests --gtest_filter='CudaDecode*:-CudaDecode.OneNan*:CudaDecode.MaskedTokens*:CudaDecode.Fp8*:CudaDecode.FusedSmallBatch:CudaDecode.ManyShortRequests:Forms/CudaDecodeFp8Form.*' > $OUT/suite-w3.log 2>&1
echo "suite rc=$? t=$SECONDS" | tee -a $S; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|\[ RUN" $OUT/suite-w3.log | tail -4 | tee -a $S
echo "end t=$SECONDS" | tee -a $S
