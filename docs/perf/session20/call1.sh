#!/usr/bin/env bash
# session 20, call 1: main's outlier cases at H=128, the opt-in pairs' error, the fp8 pairs'
# register split, the full bench decode, ncu of fp8 vs bf16 at 16 rows and of the B=1 grids.
set -u
tar xzf .gl/b20a.tgz; G=.gl; M=$G/m20main; P=$G/m20pf; mkdir -p $OUT /tmp/x
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
timeout 150 $M/mlakv_tests --gtest_filter='CudaDecode.Fp8QueriesWithOutlierChannels:CudaDecode.Fp8DsMla*:CudaDecode.Fp8RowTilePairsMatchReference:CudaDecode.DsMlaSm90Forms:CudaDecode.ClusteredPairsInACapturedGraph' > /tmp/x/tests.log 2>&1; echo "tests rc=$?" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |Failure|Expected|outliers|^\[       OK|FAILED  \]" /tmp/x/tests.log | head -40 | tee -a $OUT/summary.log
MLAKV_DECODE_CLUSTER=fp16 timeout 40 $M/mlakv_tests --gtest_filter=CudaDecode.Fp8QueriesWithOutlierChannels > /tmp/x/pairs-outliers.log 2>&1
grep -E "outliers|Expected|Which is|OK|FAILED" /tmp/x/pairs-outliers.log | head -30 | tee -a $OUT/summary.log
for v in "" fp16; do echo "MLAKV_DECODE_CLUSTER=$v"; MLAKV_DECODE_CLUSTER=$v timeout 60 $M/mlakv bench decode --only 'fp8_ds_mla B=128 H=128 ctx=4096' --only 'fp8_ds_mla B=1 H=128 ctx=32768' 2>&1 | tail -4; done | tee -a $OUT/summary.log
OUT=/tmp/x/ab1 ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $M $P@MLAKV_DECODE_L2PF=1 $P@MLAKV_DECODE_L2PF=2 -- 'bf16 B=128 H=128 ctx=4096' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=1 H=128 ctx=32768' >/dev/null 2>&1; tail -4 /tmp/x/ab1/ab.log | tee -a $OUT/summary.log
OUT=/tmp/x/ab2 ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $M $P@MLAKV_DECODE_L2PF=2 $G/m20pf72 $G/m20pf72@MLAKV_DECODE_L2PF=2 -- 'fp8 B=128 H=128 ctx=4096' 'fp8 B=32 H=128 ctx=8192' 'fp8 B=1 H=128 ctx=32768' >/dev/null 2>&1; tail -4 /tmp/x/ab2/ab.log | tee -a $OUT/summary.log
MLAKV_DECODE_L2PF=2 timeout 60 $P/mlakv_tests --gtest_filter='*TmaTiles*:*Fp8RowTilePairs*:*ClusteredPairs*' 2>&1 | grep -E "^\[  (PASSED|FAILED)|FAILED  \]" | tee -a $OUT/summary.log
timeout 120 $M/mlakv bench decode --json $OUT/decode.json > $OUT/bench-decode.txt 2>&1; echo "bench rc=$?" | tee -a $OUT/summary.log
export STEP_TIMEOUT=100
CLI=$M/mlakv SECTIONS="SpeedOfLight MemoryWorkloadAnalysis_Tables SchedulerStats WarpStateStats" REPORT=/tmp/x/ncu-h16.txt \
  scripts/ncu-cases.sh "decode|mla_decode_sm90|fp8 B=128 H=16 ctx=4096" "decode|mla_decode_sm90|bf16 B=128 H=16 ctx=4096"
CLI=$G/m19nowiden/mlakv SECTIONS="SpeedOfLight MemoryWorkloadAnalysis_Tables SchedulerStats WarpStateStats" REPORT=/tmp/x/ncu-h16.txt \
  scripts/ncu-cases.sh "decode|mla_decode_sm90|fp8 B=128 H=16 ctx=4096"
CLI=$M/mlakv NCU_ARGS="--cache-control none --clock-control none" SECTIONS="SpeedOfLight" REPORT=/tmp/x/ncu-b1.txt \
  scripts/ncu-cases.sh "decode|mla_decode_sm90|bf16 B=1 H=16 ctx=65536" "decode|combine_kernel|bf16 B=1 H=16 ctx=65536" \
  "decode|mla_decode_sm90|bf16 B=1 H=128 ctx=32768" "decode|combine_kernel|bf16 B=1 H=128 ctx=32768"
cp /tmp/x/ncu-h16.txt /tmp/x/ncu-b1.txt $OUT/; tar czf $OUT/extra.tgz -C /tmp/x tests.log pairs-outliers.log ab1 ab2
