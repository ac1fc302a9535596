#!/usr/bin/env bash
# Session 36, call 6 (whichever GPU comes): call 4's A/B and full bench (g36 = main ad15b35, ah36 =
# the 16-row look-ahead), then main's decode suite (g36's mlakv_tests) in the time left, the bf16
# rows-as-M tests first. Bundle .gl/b36f.tgz (-C .gl).
set -u
LIMIT=${LIMIT:-400}
left() { echo $((LIMIT - SECONDS)); }
BUNDLE=.gl/b36f.tgz bash docs/perf/session36/call4.sh
S=$OUT/summary.log
RM='Forms/CudaDecodeForm.*:CudaDecode.ClusteredRowTilePairsMatchSingleCtas:CudaDecode.ClusteredPairsInACapturedGraph:CudaDecode.TmaTilesAndStageOrderMatchBitForBit:CudaDecode.Bf16ThirtyTwoRowCtas:CudaDecode.LockStepManyRequestsPerPart'
timeout $(( $(left) - 10 )) .gl/g36/mlakv_tests --gtest_filter="$RM" > $OUT/tests-g36-rm.log 2>&1
echo "g36 rm tests rc=$? t=$SECONDS" | tee -a $S; grep -E "^\[  (PASSED|FAILED) |FAILED  \]" $OUT/tests-g36-rm.log | head -5 | tee -a $S
[ $(left) -gt 30 ] && timeout $(( $(left) - 10 )) .gl/g36/mlakv_tests --gtest_filter="*CudaDecode*:-$RM" > $OUT/tests-g36-rest.log 2>&1
echo "g36 rest rc=$? t=$SECONDS" | tee -a $S; grep -E "^\[  (PASSED|FAILED) |FAILED  \]" $OUT/tests-g36-rest.log | head -5 | tee -a $S
grep -c "^\[       OK" $OUT/tests-g36-rest.log | tee -a $S
