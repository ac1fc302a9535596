#!/usr/bin/env bash
# session 31, call 6: bundle .gl/b31h.tgz (packed with -C .gl: m32/ hp/ ha/) —
#   m32 = main with the read-ahead on (5be99d3's kernels); hp = try_wait's suspend-time hint
#   (10 µs) on the register-operand producer's stage waits; ha = the hint on every wait.
# The A/B, then ha's decode tests (its waits are every form's) for as long as the budget allows.
set -u
tar xzf .gl/b31h.tgz -C .gl; mkdir -p $OUT /tmp/z
S=$OUT/summary.log
nvidia-smi --query-gpu=name --format=csv | tee $S
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=90 scripts/ab-decode.sh .gl/m32 .gl/hp .gl/ha -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' \
  'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8 B=64 H=32 ctx=32768' \
  'bf16 B=128 H=16 ctx=4096' 'bf16 B=1 H=16 ctx=65536' 'bf16 B=128 H=128 ctx=4096' 'bf16 B=1 H=128 ctx=32768' \
  'fp8 B=128 H=128 ctx=4096' 'fp8_ds_mla B=128 H=128 ctx=4096' >/dev/null 2>&1
cp /tmp/z/ab/ab.log /tmp/z/ab/ab.json $OUT/ 2>/dev/null; tail -14 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
timeout $((400 - SECONDS)) .gl/ha/mlakv_tests --gtest_filter='Forms/*:CudaDecode.*:DecodeSplit.*' > $OUT/tests-ha.log 2>&1
echo "ha tests rc=$? t=$SECONDS" | tee -a $S
grep -cE "^\[       OK \]" $OUT/tests-ha.log | tee -a $S; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" $OUT/tests-ha.log | head -8 | tee -a $S
