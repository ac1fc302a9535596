#!/usr/bin/env bash
# NOTE (found later): the single-change builds here were, by a script error, copies of the
# combined one (docs/PERF.md, session 31, the correction under call 1's table).
# session 31, call 3: bundle .gl/b31p.tgz (packed with -C .gl: m31/ pk/ pv/ p/) —
#   m31 = main 595e9a9; p = K's and Vᵀ's shared-memory reads ahead of their conversion
#   (-DMLAKV_DECODE_K_PREFETCH=1 -DMLAKV_DECODE_V_PREFETCH=1); pk = K only; pv = Vᵀ only.
# p's form and NaN tests, the A/B over the register-operand shapes, p under racecheck and memcheck;
# on an H200 main's full bench (the README's H200 column is session 24's), else p's; then p's
# decode suite, each in the time left.
set -u
LIMIT=${LIMIT:-580}
tar xzf .gl/b31p.tgz -C .gl; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
S=$OUT/summary.log
nvidia-smi --query-gpu=name --format=csv | tee $S
timeout 200 .gl/p/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs:CudaDecode.OneNan*:CudaDecode.MaskedTokens*' > $OUT/tests-p.log 2>&1
echo "p tests rc=$? t=$SECONDS" | tee -a $S
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|\[       OK \]|Failure|Expected|Which is|case:" $OUT/tests-p.log | cut -c1-160 | head -16 | tee -a $S
[ $(left) -gt 120 ] && OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m31 .gl/pk .gl/pv .gl/p -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=32 H=16 ctx=8192' \
  'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8_ds_mla B=1 H=16 ctx=65536' \
  'fp8 B=64 H=32 ctx=32768' 'fp8 B=8 H=32 ctx=65536' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -11 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
[ $(left) -gt 40 ] && timeout 30 compute-sanitizer --tool racecheck .gl/p/mlakv bench decode --iters 1 --only 'fp8 B=8 H=16 ctx=1024' --only 'fp8_ds_mla B=8 H=16 ctx=1024' --only 'fp8 B=8 H=32 ctx=1024' > $OUT/racecheck.log 2>&1
echo "racecheck rc=$? t=$SECONDS" | tee -a $S; tail -1 $OUT/racecheck.log | tee -a $S
[ $(left) -gt 90 ] && timeout 120 compute-sanitizer --tool memcheck .gl/p/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs' > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -3 $OUT/memcheck.log | tee -a $S
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && [ $(left) -gt 150 ]; then
  timeout 145 .gl/m31/mlakv bench decode --json $OUT/decode-h200-m31.json > $OUT/bench-h200-m31.log 2>&1
  echo "h200 bench rc=$? t=$SECONDS" | tee -a $S; sed -n 1,6p $OUT/bench-h200-m31.log | tee -a $S
else
  [ $(left) -gt 160 ] && timeout 145 .gl/p/mlakv bench decode --json $OUT/decode-p.json > $OUT/bench-p.log 2>&1
  echo "bench p rc=$? t=$SECONDS" | tee -a $S; sed -n 1,4p $OUT/bench-p.log | tee -a $S
fi
if [ $(left) -gt 60 ]; then
  timeout $(( $(left) - 15 )) .gl/p/mlakv_tests --gtest_filter='CudaDecode.*:DecodeSplit.*:Forms/*:CudaMergeStates.*:-Forms/CudaDecodeFp8Form.*/rs:CudaDecode.OneNan*:CudaDecode.MaskedTokens*' > $OUT/suite-p.log 2>&1
  echo "suite rc=$? t=$SECONDS" | tee -a $S
  grep -cE "^\[       OK \]" $OUT/suite-p.log | tee -a $S; grep -E "FAILED|Failure" $OUT/suite-p.log | head -5 | tee -a $S
fi
echo "end t=$SECONDS" | tee -a $S
