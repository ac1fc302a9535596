#!/usr/bin/env bash
# Session 36, call 4 (asked of an H200). Bundle .gl/b36d.tgz (-C .gl): g36 = main ad15b35, ah36 =
# g36 with the look-ahead producer at 16 rows (session36/ahead16.patch).
#   1. A/B g36 / ah36 on the 16-row FP8 shapes, three rounds.   2. g36's full bench.
set -u
BUNDLE=${BUNDLE:-.gl/b36d.tgz}
tar xzf $BUNDLE -C .gl; mkdir -p $OUT /tmp/z/n
S=$OUT/summary.log
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv | tee $S
OUT=/tmp/z/ab ROUNDS=${ROUNDS:-3} AB_TIMEOUT=60 scripts/ab-decode.sh .gl/g36 .gl/ah36 -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=8 H=16 ctx=1024' \
  'fp8 B=1 H=16 ctx=65536' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'bf16 B=128 H=16 ctx=4096' >/dev/null 2>&1
cp /tmp/z/ab/ab.log /tmp/z/n/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -10 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
timeout 60 .gl/g36/mlakv bench decode --json $OUT/decode-g36.json > /tmp/z/n/bench-g36.log 2>&1
echo "bench g36 rc=$? t=$SECONDS" | tee -a $S
tar czf $OUT/logs.tgz -C /tmp/z n
echo "end t=$SECONDS" | tee -a $S
