#!/usr/bin/env bash
# session 23, call 2: main + the overlap order by default (MLAKV_DECODE_RM_ORDER=release|adaptive
# for the others) and splits aligned to parts by default (ALIGN=2). The decode tests, the three
# orders A/B on the rows-as-M shapes (bf16 and fp8 pairs), the full bench with the new defaults,
# and the B=1 stamps (where a small step's fixed cost sits).
set -u
tar xzf .gl/b23b.tgz; M=.gl/m23b; TR=.gl/m23btrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
timeout 240 $M/mlakv_tests --gtest_filter='CudaDecode.*:DecodeSplit.*' > /tmp/z/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests.log | head -30 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $M $M@MLAKV_DECODE_RM_ORDER=release $M@MLAKV_DECODE_RM_ORDER=adaptive -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=1 H=128 ctx=32768' 'bf16 B=8 H=128 ctx=65536' \
  'fp8 B=128 H=128 ctx=4096' 'fp8 B=32 H=128 ctx=8192' >/dev/null 2>&1
tail -8 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 200 $M/mlakv bench decode --json $OUT/decode.json > $OUT/bench-decode.txt 2>&1; echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log
for c in 'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=128 ctx=32768'; do
  d=/tmp/z/tr/${c//[^A-Za-z0-9]/_}; mkdir -p $d
  MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only "$c" --iters 20 > $d.log 2>&1
  echo "== trace $c" | tee -a $OUT/summary.log
  python3 scripts/decode_trace.py $d/*.bin > $d.txt 2>&1; head -14 $d.txt | tee -a $OUT/summary.log
done
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
