#!/usr/bin/env bash
# session 20, call 1: main's outlier cases at H=128; fp8_ds_mla's 32-row pairs (tests, A/B);
# the L2 prefetch (bf16, fp8 pairs) and the fp8 pairs' 72/216 split; the full bench decode; ncu of
# fp8 vs bf16 at 16 rows and of the B=1 grids, as time allows.
set -u
tar xzf .gl/b20a.tgz; G=.gl; M=$G/m20main; P=$G/m20pf; D=$G/m20ds; mkdir -p $OUT /tmp/x
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
T='CudaDecode.Fp8QueriesWithOutlierChannels:CudaDecode.Fp8DsMla*:CudaDecode.Fp8RowTilePairsMatchReference:CudaDecode.DsMlaSm90Forms:CudaDecode.ClusteredPairsInACapturedGraph'
timeout 150 $M/mlakv_tests --gtest_filter="$T" > /tmp/x/tests-main.log 2>&1; echo "main tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |Failure|Expected|outliers|FAILED  \]" /tmp/x/tests-main.log | head -30 | tee -a $OUT/summary.log
timeout 170 $D/mlakv_tests --gtest_filter="$T:CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference:CudaDecode.CacheNan*:CudaDecode.DsMlaPairsMatchSingleCtasBitForBit" > /tmp/x/tests-ds.log 2>&1; echo "ds32 pairs tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which is|FAILED  \]|rror" /tmp/x/tests-ds.log | head -40 | tee -a $OUT/summary.log
OUT=/tmp/x/abds ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $M $D $M@MLAKV_DECODE_CLUSTER=fp16 -- 'fp8_ds_mla B=128 H=128 ctx=4096' 'fp8_ds_mla B=1 H=128 ctx=32768' 'fp8_ds_mla B=32 H=128 ctx=8192' >/dev/null 2>&1; tail -5 /tmp/x/abds/ab.log | tee -a $OUT/summary.log
OUT=/tmp/x/ab1 ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $M $P@MLAKV_DECODE_L2PF=1 $P@MLAKV_DECODE_L2PF=2 -- 'bf16 B=128 H=128 ctx=4096' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=1 H=128 ctx=32768' >/dev/null 2>&1; tail -5 /tmp/x/ab1/ab.log | tee -a $OUT/summary.log
OUT=/tmp/x/ab2 ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $M $P@MLAKV_DECODE_L2PF=2 $G/m20pf72 $G/m20pf72@MLAKV_DECODE_L2PF=2 -- 'fp8 B=128 H=128 ctx=4096' 'fp8 B=32 H=128 ctx=8192' 'fp8 B=1 H=128 ctx=32768' >/dev/null 2>&1; tail -5 /tmp/x/ab2/ab.log | tee -a $OUT/summary.log
echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 100 $M/mlakv bench decode --json $OUT/decode.json > $OUT/bench-decode.txt 2>&1; echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/x tests-main.log tests-ds.log abds ab1 ab2
export STEP_TIMEOUT=60
if (( SECONDS < 330 )); then
CLI=$M/mlakv SECTIONS="SpeedOfLight MemoryWorkloadAnalysis_Tables SchedulerStats WarpStateStats" REPORT=$OUT/ncu-h16.txt \
  scripts/ncu-cases.sh "decode|mla_decode_sm90|fp8 B=128 H=16 ctx=4096" "decode|mla_decode_sm90|bf16 B=128 H=16 ctx=4096"
CLI=$G/m19nowiden/mlakv SECTIONS="SpeedOfLight MemoryWorkloadAnalysis_Tables SchedulerStats WarpStateStats" REPORT=$OUT/ncu-h16.txt \
  scripts/ncu-cases.sh "decode|mla_decode_sm90|fp8 B=128 H=16 ctx=4096"
fi
if (( SECONDS < 400 )); then
CLI=$M/mlakv NCU_ARGS="--cache-control none --clock-control none" SECTIONS="SpeedOfLight" REPORT=$OUT/ncu-b1.txt \
  scripts/ncu-cases.sh "decode|mla_decode_sm90|bf16 B=1 H=16 ctx=65536" "decode|combine_kernel|bf16 B=1 H=16 ctx=65536"
fi
echo "end t=$SECONDS" | tee -a $OUT/summary.log
