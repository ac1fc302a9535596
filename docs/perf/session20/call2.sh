#!/usr/bin/env bash
# session 20, call 2: the exact fp8_ds_mla pairs (branch horner): every decode test, memcheck on
# two pair tests, an A/B against main (and main's opt-in fp16 pairs), the full bench decode.
set -u
tar xzf .gl/b20b.tgz; G=.gl; M=$G/m20main; H=$G/m20h; mkdir -p $OUT /tmp/x
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
timeout 230 $H/mlakv_tests --gtest_filter='*CudaDecode*:*CudaMerge*' > /tmp/x/tests.log 2>&1; echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which is|FAILED  \]|outliers x1000|latents x" /tmp/x/tests.log | head -50 | tee -a $OUT/summary.log
OUT=/tmp/x/ab ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $M $H $M@MLAKV_DECODE_CLUSTER=fp16 -- 'fp8_ds_mla B=128 H=128 ctx=4096' 'fp8_ds_mla B=32 H=128 ctx=8192' 'fp8_ds_mla B=1 H=128 ctx=32768' 'bf16 B=128 H=128 ctx=4096' 'fp8 B=128 H=128 ctx=4096' >/dev/null 2>&1; tail -7 /tmp/x/ab/ab.log | tee -a $OUT/summary.log
echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 100 $H/mlakv bench decode --json $OUT/decode.json > $OUT/bench-decode.txt 2>&1; echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log
if (( SECONDS < 420 )); then
  timeout 120 compute-sanitizer --tool memcheck $H/mlakv_tests --gtest_filter='CudaDecode.ClusteredPairsInACapturedGraph:CudaDecode.Fp8DsMlaZeroLatentGroupStaysFinite' > /tmp/x/memcheck.log 2>&1
  echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -3 /tmp/x/memcheck.log | tee -a $OUT/summary.log
fi
tar czf $OUT/extra.tgz -C /tmp/x .
