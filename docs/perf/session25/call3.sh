#!/usr/bin/env bash
# session 25, call 3: m25d — ex2.approx in the split-rows / alternating softmax where a warpgroup
# holds 32 rows: A/B against session 24's main on the 32-row shapes (a 16-row control), and every
# decode test.
set -u
tar xzf .gl/b25d.tgz; tar xzf .gl/b24j.tgz; O=.gl/m24j; N=.gl/m25d; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $O $N -- \
  'fp8 B=64 H=32 ctx=32768' 'fp8 B=8 H=32 ctx=65536' 'fp8_ds_mla B=64 H=32 ctx=32768' 'fp8_ds_mla B=128 H=128 ctx=4096' \
  'fp8_ds_mla B=1 H=128 ctx=32768' 'bf16 B=64 H=32 ctx=32768' 'fp8 B=128 H=16 ctx=4096' >/dev/null 2>&1
tail -10 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 300 $N/mlakv_tests --gtest_filter='CudaDecode*:Forms/CudaDecodeForm*:DecodeSplit.*' > /tmp/z/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests.log | head -20 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
