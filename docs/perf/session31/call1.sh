#!/usr/bin/env bash
# NOTE (found later): the single-change builds here were, by a script error, copies of the
# combined one (docs/PERF.md, session 31, the correction under call 1's table).
# session 31, call 1: bundle .gl/b31.tgz (packed with -C .gl: m31/ k/ v/ kv/) —
#   m31 = main 595e9a9; kv = K's and Vᵀ's conversion split between cvt and the integer path
#   (src/cuda/e4m3_alu.hpp, the candidate default); k = K only (-DMLAKV_DECODE_ALU_V=0);
#   v = Vᵀ only (-DMLAKV_DECODE_ALU_K=0).
# The conversion rates first (pipe_rate.cu), kv's form and NaN tests, the A/B over the 16-row
# shapes, kv under memcheck and racecheck; on an H200 main's full bench too (the README's H200
# column is session 24's), each in the time left.
set -u
LIMIT=${LIMIT:-580}
tar xzf .gl/b31.tgz -C .gl; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
S=$OUT/summary.log
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv | tee $S
nvcc -O3 -arch=sm_90a -std=c++17 -I src docs/perf/session31/pipe_rate.cu -o /tmp/z/pipe_rate && /tmp/z/pipe_rate | tee -a $S
timeout 200 .gl/kv/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs:CudaDecode.OneNan*:CudaDecode.MaskedTokens*:Numeric.E4m3Alu*' > $OUT/tests-kv.log 2>&1
echo "kv tests rc=$? t=$SECONDS" | tee -a $S
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|\[       OK \]|Failure|Expected|Which is|case:" $OUT/tests-kv.log | cut -c1-160 | head -16 | tee -a $S
[ $(left) -gt 120 ] && OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m31 .gl/k .gl/v .gl/kv -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=32 H=16 ctx=8192' \
  'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8_ds_mla B=1 H=16 ctx=65536' \
  'fp8 B=64 H=32 ctx=32768' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -10 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
[ $(left) -gt 40 ] && timeout 30 compute-sanitizer --tool racecheck .gl/kv/mlakv bench decode --iters 1 --only 'fp8 B=8 H=16 ctx=1024' --only 'fp8_ds_mla B=8 H=16 ctx=1024' > $OUT/racecheck.log 2>&1
echo "racecheck rc=$? t=$SECONDS" | tee -a $S; tail -1 $OUT/racecheck.log | tee -a $S
[ $(left) -gt 90 ] && timeout 120 compute-sanitizer --tool memcheck .gl/kv/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.SixteenAnd*/rs:CudaDecode.OneNan*' > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -3 $OUT/memcheck.log | tee -a $S
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && [ $(left) -gt 150 ]; then
  timeout 145 .gl/m31/mlakv bench decode --json $OUT/decode-h200-m31.json > $OUT/bench-h200-m31.log 2>&1
  echo "h200 bench rc=$? t=$SECONDS" | tee -a $S; sed -n 1,6p $OUT/bench-h200-m31.log | tee -a $S
fi
echo "end t=$SECONDS" | tee -a $S
