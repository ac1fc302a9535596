#!/usr/bin/env bash
# session 22, call 6: the final build (call 4's kernels without the SPIN probe; the bench's
# warm-up now at least 20 ms a case): the full bench decode, twice the B=1 H=16 1K cases alone,
# and the decode tests that cover the combine and the fused path.
set -u
tar xzf .gl/b22e.tgz; F=.gl/m22fin; mkdir -p $OUT /tmp/y
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
for r in 1 2; do timeout 30 $F/mlakv bench decode --only 'bf16 B=1 H=16 ctx=1024' --only 'fp8 B=1 H=16 ctx=1024' 2>&1 | grep -E "^mla_decode" | sort -u | tee -a $OUT/summary.log; done
timeout 150 $F/mlakv bench decode --json $OUT/decode.json > $OUT/bench-decode.txt 2>&1; echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log
timeout 150 $F/mlakv_tests --gtest_filter='CudaDecode.FormatsHeadsQueries:CudaDecode.ManyShortRequests:CudaDecode.FusedSmallBatch*:CudaDecode.NearEqualRequests*:CudaDecode.DcpShards:CudaDecode.ClusteredPairsInACapturedGraph' > /tmp/y/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |Failure|FAILED  \]|OK \]" /tmp/y/tests.log | head -20 | tee -a $OUT/summary.log
echo "end t=$SECONDS" | tee -a $OUT/summary.log
