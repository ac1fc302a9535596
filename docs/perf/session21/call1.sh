#!/usr/bin/env bash
# session 21, call 1. Binaries: .gl/b21.tgz = m20main (main's kernels), m20h2 (exact fp8_ds_mla
# pairs v2, session 20), m21regs (fp8 at 16 rows widening from registers, branch fp8regs).
# 1. m21regs: the fp8 16-row tests, then an A/B against main on the fp8 H=16 shapes.
# 2. session 20's call 3 (the exact pairs; tests, bench, memcheck only if they win by 7 %).
# 3. while time is left: memcheck of m21regs, B = 1 probes (fewer parts; back-to-back steps).
set -u
tar xzf .gl/b21.tgz; G=.gl; M=$G/m20main; R=$G/m21regs; mkdir -p $OUT /tmp/x /tmp/y
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
timeout 120 $R/mlakv_tests --gtest_filter='CudaDecode.FormatsHeadsQueries:CudaDecode.Fp8*:CudaDecode.BlockSizes:CudaDecode.LongContextOneRequest:CudaDecode.ManyShortRequests:CudaDecode.BadBlockIdsAreMaskedNotRead:CudaDecode.MaskedTokens*:CudaDecode.Fused*:CudaDecode.CacheNan*:CudaDecode.ReferenceVectors:CudaDecode.GraphCaptureFollowsDeviceLengths' > /tmp/y/regs-tests.log 2>&1
echo "regs tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which is|FAILED  \]" /tmp/y/regs-tests.log | head -30 | tee -a $OUT/summary.log
OUT=/tmp/y/regs ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $M $R -- 'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=8 H=16 ctx=8192' >/dev/null 2>&1
tail -6 /tmp/y/regs/ab.log | tee -a $OUT/summary.log
echo "regs ab t=$SECONDS" | tee -a $OUT/summary.log
sed -i 's/b20c.tgz/b21.tgz/' docs/perf/session20/call3-not-run.sh
bash docs/perf/session20/call3-not-run.sh
if (( SECONDS < 400 )); then
  timeout 60 compute-sanitizer --tool memcheck $R/mlakv_tests --gtest_filter='CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference' > /tmp/y/regs-memcheck.log 2>&1
  echo "regs memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -3 /tmp/y/regs-memcheck.log | tee -a $OUT/summary.log
fi
if (( SECONDS < 440 )); then
  OUT=/tmp/y/b1 ROUNDS=1 AB_TIMEOUT=30 scripts/ab-decode.sh $M $M@MLAKV_DECODE_PARTS=66 -- 'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=16 ctx=1024' >/dev/null 2>&1
  tail -3 /tmp/y/b1/ab.log | tee -a $OUT/summary.log
fi
echo "end t=$SECONDS" | tee -a $OUT/summary.log
tar czf $OUT/extra21.tgz -C /tmp/y .
