#!/usr/bin/env bash
# Session 36, call 5: main ad15b35's decode suite on the GPU (g36: its mlakv_tests), memcheck on
# the bf16 rows-as-M forms (the kernel without the broadcast) in the time left.
set -u
BUNDLE=${BUNDLE:-.gl/b36e.tgz} LIMIT=${LIMIT:-420}
tar xzf $BUNDLE -C .gl; mkdir -p $OUT /tmp/z/n
left() { echo $((LIMIT - SECONDS)); }
S=$OUT/summary.log
nvidia-smi --query-gpu=name --format=csv | tee $S
timeout 340 .gl/g36/mlakv_tests --gtest_filter='*CudaDecode*' > $OUT/tests-g36.log 2>&1
echo "g36 tests rc=$? t=$SECONDS" | tee -a $S
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure" $OUT/tests-g36.log | head -8 | tee -a $S
[ $(left) -gt 20 ] && timeout $(( $(left) - 8 )) compute-sanitizer --tool memcheck .gl/g36/mlakv_tests \
  --gtest_filter='Forms/CudaDecodeForm.SixtyFourRowCtasMatchReference/rows:CudaDecode.ClusteredRowTilePairsMatchSingleCtas' > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -3 $OUT/memcheck.log | tee -a $S
