#!/usr/bin/env bash
# session 30, call 1: bundle .gl/b30.tgz —
#   m30 = main 6fa1fd8 (CLI: the defaults of session 29);
#   d32 = main with docs/perf/session30/pipe16-ds-rs32.patch applied (CLI and tests): pipe16 (at
#         16 rows, fp8 and fp8_ds_mla, each warpgroup's next Q·Kᵀ issued under its P·V) plus
#         fp8_ds_mla at 32 rows in the register-operand form (one Q·Kᵀ accumulator).
# The tarball holds m30/ and d32/ (packed from inside .gl).
# d32's form tests, one A/B over the shapes each change moves, racecheck and memcheck of d32's
# new forms, then d32's whole decode suite and its full bench (the bench first on an H200, whose
# column is session 24's), each in the time left.
set -u
LIMIT=${LIMIT:-580}
tar xzf .gl/b30.tgz -C .gl; M=.gl/m30; D=.gl/d32; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 200 $D/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs' > $OUT/tests-d32.log 2>&1
echo "d32 form tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|\[       OK \]|Failure|Expected|Which is|case:" $OUT/tests-d32.log | cut -c1-160 | head -16 | tee -a $OUT/summary.log
[ $(left) -gt 120 ] && OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $M $D -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=1 H=16 ctx=1024' \
  'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8_ds_mla B=1 H=16 ctx=65536' \
  'fp8_ds_mla B=64 H=32 ctx=32768' 'fp8_ds_mla B=8 H=32 ctx=65536' 'fp8_ds_mla B=128 H=128 ctx=4096' \
  'fp8_ds_mla B=1 H=128 ctx=32768' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; tail -13 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "ab t=$SECONDS" | tee -a $OUT/summary.log
[ $(left) -gt 40 ] && timeout 30 compute-sanitizer --tool racecheck $D/mlakv bench decode --iters 1 --only 'fp8_ds_mla B=8 H=32 ctx=1024' --only 'fp8_ds_mla B=8 H=16 ctx=1024' --only 'fp8 B=8 H=16 ctx=1024' > $OUT/racecheck.log 2>&1
echo "racecheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -2 $OUT/racecheck.log | tee -a $OUT/summary.log
[ $(left) -gt 60 ] && timeout 100 compute-sanitizer --tool memcheck $D/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.DsMla*/rs' > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -3 $OUT/memcheck.log | tee -a $OUT/summary.log
bench() {
  [ $(left) -gt 140 ] && timeout 140 $D/mlakv bench decode --json $OUT/decode-d32.json > $OUT/bench-d32.log 2>&1
  echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log; sed -n 1,8p $OUT/bench-d32.log | tee -a $OUT/summary.log
}
suite() {
  [ $(left) -gt 40 ] && timeout $(( $(left) - 10 )) $D/mlakv_tests --gtest_filter='CudaDecode.*:DecodeSplit.*:Forms/*:CudaMergeStates.*:-Forms/CudaDecodeFp8Form.*/rs' > $OUT/suite-d32.log 2>&1
  echo "suite rc=$? t=$SECONDS" | tee -a $OUT/summary.log
  grep -E "^\[  (PASSED|FAILED) |FAILED  \]|\[       OK \]" $OUT/suite-d32.log | cut -c1-120 | tail -6 | tee -a $OUT/summary.log
}
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then bench; suite; else suite; bench; fi
