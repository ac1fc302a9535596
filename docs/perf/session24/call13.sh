#!/usr/bin/env bash
# session 24, call 13: ex2.approx in the split-rows / alternating softmax (the H=16 and H=32
# forms; m24k) against the final main (m24j): A/B and their tests. A measurement for the next
# session (decode-notes plan item 2), not merged.
set -u
tar xzf .gl/b24k.tgz; J=.gl/m24j; K=.gl/m24k; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $J $K -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8_ds_mla B=128 H=16 ctx=4096' 'bf16 B=128 H=16 ctx=4096' 'bf16 B=1 H=16 ctx=65536' 'fp8 B=64 H=32 ctx=32768' >/dev/null 2>&1
tail -8 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 120 $K/mlakv_tests --gtest_filter='CudaDecode.FormatsHeadsQueries:CudaDecode.DsMlaSm90Forms:CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference' > /tmp/z/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests.log | head -10 | tee -a $OUT/summary.log
echo "end t=$SECONDS" | tee -a $OUT/summary.log
