#!/usr/bin/env bash
# session 25, call 8: m25g — the sm90 kernel's warpgroup index through a shuffle (uniform wgmma
# descriptors): A/B against main (m25d) across the forms, and every decode test.
set -u
tar xzf .gl/b25g.tgz; tar xzf .gl/b25d.tgz; O=.gl/m25d; N=.gl/m25g; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $O $N -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=1 H=128 ctx=32768' 'bf16 B=32 H=128 ctx=8192' 'fp8 B=128 H=128 ctx=4096' \
  'fp8_ds_mla B=128 H=128 ctx=4096' 'bf16 B=128 H=16 ctx=4096' 'bf16 B=1 H=16 ctx=65536' 'fp8 B=128 H=16 ctx=4096' \
  'fp8 B=64 H=16 ctx=16384' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8 B=64 H=32 ctx=32768' 'bf16 B=64 H=32 ctx=32768' >/dev/null 2>&1
tail -14 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 300 $N/mlakv_tests --gtest_filter='CudaDecode*:Forms/CudaDecodeForm*:DecodeSplit.*' > /tmp/z/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests.log | head -20 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
