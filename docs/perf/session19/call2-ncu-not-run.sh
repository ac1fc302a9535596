#!/usr/bin/env bash
# session 19, call 2 (untracked; removed after the session): ncu of fp8 vs bf16 at 16 rows, and the
# B=1 grids as they run (L2 warm, clocks free)
set -u
[[ -d .gl/m19ds16 ]] || tar xzf .gl/b19a.tgz
export CLI=.gl/m19ds16/mlakv STEP_TIMEOUT=150
SECTIONS="SpeedOfLight MemoryWorkloadAnalysis_Tables SchedulerStats WarpStateStats" REPORT=$OUT/ncu-h16.txt \
  scripts/ncu-cases.sh "decode|mla_decode_sm90|fp8 B=128 H=16 ctx=4096" "decode|mla_decode_sm90|bf16 B=128 H=16 ctx=4096"
NCU_ARGS="--cache-control none --clock-control none" SECTIONS="SpeedOfLight" REPORT=$OUT/ncu-b1.txt \
  scripts/ncu-cases.sh "decode|mla_decode_sm90|bf16 B=1 H=16 ctx=65536" "decode|combine_kernel|bf16 B=1 H=16 ctx=65536" \
  "decode|mla_decode_sm90|fp8 B=1 H=16 ctx=65536" "decode|combine_kernel|fp8 B=1 H=16 ctx=65536"
grep -E "^====|Duration|Throughput|Elapsed Cycles|Bank|Wavefronts|Issue Slots Busy|No Eligible|Stall" $OUT/ncu-h16.txt $OUT/ncu-b1.txt | head -120
