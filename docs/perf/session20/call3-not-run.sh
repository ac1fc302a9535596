#!/usr/bin/env bash
# session 20, call 3 (not run: too little device time left): the exact fp8_ds_mla pairs, second
# version (docs/perf/session20/horner-exact-pairs.patch, built as .gl/m20h2): an A/B against
# main (and main's opt-in fp16 pairs) first; only if it beats main's 32-row form by 7 % at B=128
# H=128 4K, every decode test, the full bench decode and memcheck on two pair tests.
set -u
tar xzf .gl/b20c.tgz; G=.gl; M=$G/m20main; H=$G/m20h2; mkdir -p $OUT /tmp/x
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
OUT=/tmp/x/ab ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $M $H $M@MLAKV_DECODE_CLUSTER=fp16 -- 'fp8_ds_mla B=128 H=128 ctx=4096' 'fp8_ds_mla B=32 H=128 ctx=8192' 'fp8_ds_mla B=1 H=128 ctx=32768' >/dev/null 2>&1; tail -5 /tmp/x/ab/ab.log | tee -a $OUT/summary.log
win=$(awk -F'|' '/fp8_ds_mla B=128 H=128/ { print ($4 + 0 < 0.93 * ($3 + 0)) ? 1 : 0 }' /tmp/x/ab/ab.log | tail -1)
echo "win=$win t=$SECONDS" | tee -a $OUT/summary.log
if [[ "$win" == 1 ]]; then
  timeout 150 $H/mlakv_tests --gtest_filter='CudaDecode.Fp8*:CudaDecode.DsMla*:CudaDecode.ClusteredPairsInACapturedGraph:CudaDecode.CacheNan*:CudaDecode.TmaTilesAndStageOrderMatchBitForBit:Forms/CudaDecodeForm.*' > /tmp/x/tests.log 2>&1; echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
  grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which is|FAILED  \]|outliers x1000|latents x" /tmp/x/tests.log | head -50 | tee -a $OUT/summary.log
  (( SECONDS < 170 )) && timeout 80 $H/mlakv bench decode --json $OUT/decode.json > $OUT/bench-decode.txt 2>&1; echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log
  if (( SECONDS < 200 )); then
    timeout 40 compute-sanitizer --tool memcheck $H/mlakv_tests --gtest_filter='CudaDecode.ClusteredPairsInACapturedGraph:CudaDecode.Fp8DsMlaZeroLatentGroupStaysFinite' > /tmp/x/memcheck.log 2>&1
    echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -3 /tmp/x/memcheck.log | tee -a $OUT/summary.log
  fi
fi
tar czf $OUT/extra.tgz -C /tmp/x .
