#!/usr/bin/env bash
# session 21, call 2: fp8 at 16 rows with half of each tile through the raw ring and half through
# registers (m21hyb) against main (m20main): the fp8 decode tests, the A/B, memcheck.
set -u
tar xzf .gl/b21b.tgz; G=.gl; M=$G/m20main; R=$G/m21hyb; mkdir -p $OUT /tmp/y
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
timeout 120 $R/mlakv_tests --gtest_filter='CudaDecode.FormatsHeadsQueries:CudaDecode.Fp8*:CudaDecode.BlockSizes:CudaDecode.LongContextOneRequest:CudaDecode.ManyShortRequests:CudaDecode.BadBlockIdsAreMaskedNotRead:CudaDecode.MaskedTokens*:CudaDecode.Fused*:CudaDecode.ReferenceVectors:CudaDecode.GraphCaptureFollowsDeviceLengths' > /tmp/y/hyb-tests.log 2>&1
echo "hyb tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which is|FAILED  \]" /tmp/y/hyb-tests.log | head -30 | tee -a $OUT/summary.log
OUT=/tmp/y/hyb ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $M $R -- 'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=8 H=16 ctx=8192' >/dev/null 2>&1
tail -6 /tmp/y/hyb/ab.log | tee -a $OUT/summary.log
timeout 60 compute-sanitizer --tool memcheck $R/mlakv_tests --gtest_filter='CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference' > /tmp/y/hyb-memcheck.log 2>&1
echo "hyb memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -3 /tmp/y/hyb-memcheck.log | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/y .
