#!/usr/bin/env bash
# session 23, call 3: the bf16 rows-as-M stage in two halves (m23c) against call 2's build (m23b):
# A/B first, then every decode test on m23c, memcheck on the masked-block and long-context tests,
# and m23c's stamps at B=128 H=128 4K.
set -u
tar xzf .gl/b23c.tgz; B=.gl/m23b; C=.gl/m23c; TR=.gl/m23ctrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $B $C -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=128 H=128 ctx=8192' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=8 H=128 ctx=65536' \
  'bf16 B=1 H=128 ctx=32768' 'bf16 B=128 H=128 ctx=1024' 'bf16 B=128 H=16 ctx=4096' >/dev/null 2>&1
tail -9 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 240 $C/mlakv_tests --gtest_filter='CudaDecode.*:DecodeSplit.*' > /tmp/z/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests.log | head -30 | tee -a $OUT/summary.log
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 1 $C/mlakv_tests --gtest_filter='CudaDecode.BadBlockIdsAreMaskedNotRead:CudaDecode.ClusteredRowTilePairsMatchSingleCtas' > /tmp/z/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "ERROR SUMMARY|PASSED|FAILED" /tmp/z/memcheck.log | head -5 | tee -a $OUT/summary.log
d=/tmp/z/tr/b128; mkdir -p $d
MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --iters 20 > $d.log 2>&1
python3 scripts/decode_trace.py $d/*.bin > $d.txt 2>&1
grep -E "own tile k - 2|producer: |bytes landed|: 0 -> 4|: 7 -> 2|: 2 -> 3|: 3 -> 4" $d.txt | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
