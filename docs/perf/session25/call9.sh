#!/usr/bin/env bash
# session 25, call 9: m25h — the combine's item loop run once before its wait (its code warm):
# A/B against main (m25d) at small batches, the step stamps, and every decode test.
set -u
tar xzf .gl/b25h.tgz; tar xzf .gl/b25d.tgz; O=.gl/m25d; N=.gl/m25h; TR=.gl/m25htrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=3 AB_TIMEOUT=60 scripts/ab-decode.sh $O $N -- \
  'bf16 B=1 H=16 ctx=1024' 'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=128 ctx=32768' 'bf16 B=8 H=16 ctx=8192' 'bf16 B=8 H=128 ctx=8192' \
  'fp8 B=1 H=16 ctx=65536' 'fp8_ds_mla B=1 H=128 ctx=32768' 'bf16 B=128 H=16 ctx=4096' >/dev/null 2>&1
tail -10 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
d=/tmp/z/tr; MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only 'bf16 B=1 H=16 ctx=1024' --only 'bf16 B=1 H=128 ctx=32768' --iters 20 > $d/trace.log 2>&1
for f in $d/*.bin; do python3 scripts/decode_trace.py "$f" 2>&1 | grep -A 9 "step:"; done | tee -a $OUT/summary.log
timeout 300 $N/mlakv_tests --gtest_filter='CudaDecode*:Forms/CudaDecodeForm*:DecodeSplit.*' > /tmp/z/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests.log | head -20 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
