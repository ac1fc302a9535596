#!/usr/bin/env bash
# session 22, call 3: whole requests only within 16 cost units of the balanced payload (m22w2)
# against call 2's rule (m22whole) and the split (MLAKV_DECODE_WHOLE=0) where they differ
# (64K tokens); every CudaDecode test on m22w2; the full bench decode on it.
set -u
tar xzf .gl/b22b.tgz; tar xzf .gl/b22c.tgz; G=.gl; W=$G/m22whole; W2=$G/m22w2; mkdir -p $OUT /tmp/y
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
OUT=/tmp/y/ab ROUNDS=2 AB_TIMEOUT=90 scripts/ab-decode.sh $W $W2 $W2@MLAKV_DECODE_WHOLE=0 -- 'bf16 B=128 H=128 ctx=65536' 'fp8 B=128 H=128 ctx=65536' 'fp8_ds_mla B=128 H=128 ctx=65536' 'bf16 B=128 H=128 ctx=4096' 'bf16 B=128 H=128 ctx=8192' >/dev/null 2>&1
tail -7 /tmp/y/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 100 $W2/mlakv bench decode --json $OUT/decode.json > $OUT/bench-decode.txt 2>&1; echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log
timeout 330 $W2/mlakv_tests --gtest_filter='CudaDecode.*' > /tmp/y/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which is|FAILED  \]|tests ran|SKIPPED \]" /tmp/y/tests.log | head -40 | tee -a $OUT/summary.log
grep -c "^\[       OK \]" /tmp/y/tests.log | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/y .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
