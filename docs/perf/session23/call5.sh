#!/usr/bin/env bash
# session 23, call 5: main (m23e: per-format order, ALIGN=2) against the stage halves refilled
# separately but awaited whole by Q·Kᵀ (m23d; MLAKV_DECODE_QK_SPLIT=1: call 3's mid-sequence
# wait), and m23d with the release order; main's full bench (the table) and its FP8 pairs
# and order tests (its FP8 order changed). Trimmed after refused starts (device time).
set -u
tar xzf .gl/b23d.tgz; E=.gl/m23e; D=.gl/m23d; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $E $D $D@MLAKV_DECODE_RM_ORDER=release -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=128 H=128 ctx=8192' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=8 H=128 ctx=65536' 'bf16 B=1 H=128 ctx=32768' >/dev/null 2>&1
tail -7 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 100 $E/mlakv bench decode --json $OUT/decode-m23e.json > $OUT/bench-decode-m23e.txt 2>&1; echo "bench m23e rc=$? t=$SECONDS" | tee -a $OUT/summary.log
timeout 60 $E/mlakv_tests --gtest_filter='CudaDecode.Fp8RowTilePairsMatchReference:CudaDecode.TmaTilesAndStageOrderMatchBitForBit' > /tmp/z/tests-e.log 2>&1
echo "tests m23e rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests-e.log | head -10 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
