#!/usr/bin/env bash
set -u
tar xzf .gl/b19b.tgz; B=.gl/m19fix; mkdir -p $OUT
timeout 150 $B/mlakv_tests --gtest_filter='CudaDecode.Fp8QueriesWithOutlierChannels:CudaDecode.Fp8DsMla*:CudaDecode.Fp8RowTilePairsMatchReference:CudaDecode.DsMlaSm90Forms:CudaDecode.ClusteredPairsInACapturedGraph' > $OUT/tests.log 2>&1; echo "tests rc=$?"
grep -E "^\[  (PASSED|FAILED) |Failure|Expected|outliers" $OUT/tests.log | head -40
MLAKV_DECODE_CLUSTER=fp16 timeout 40 $B/mlakv_tests --gtest_filter=CudaDecode.Fp8QueriesWithOutlierChannels 2>&1 | grep -E "outliers|Expected" | tee $OUT/pairs-outliers.log
for v in "" fp16; do MLAKV_DECODE_CLUSTER=$v timeout 60 $B/mlakv bench decode --only 'fp8_ds_mla B=128 H=128 ctx=4096' --only 'fp8_ds_mla B=1 H=128 ctx=32768' 2>&1 | tail -4; done | tee $OUT/bench.log
