#!/usr/bin/env bash
# session 24, call 7: m24g — ex2.approx in the rows-as-M softmax (both forms), the lock-step
# form's first refill before f1: A/B against session 23's main (m23e), stamps, every decode test.
set -u
tar xzf .gl/b24g.tgz; O=.gl/m23ecli; N=.gl/m24g; TR=.gl/m24gtrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
d=/tmp/z/tr/b128; mkdir -p $d
MLAKV_DECODE_FORM=ls MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --iters 20 > $d.log 2>&1
echo "trace rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -1 $d.log | tee -a $OUT/summary.log; cp $d/*.bin $OUT/trace-b128.bin
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $O $N $N@MLAKV_DECODE_FORM=ls -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=1 H=128 ctx=32768' 'bf16 B=8 H=128 ctx=65536' \
  'fp8 B=128 H=128 ctx=4096' 'fp8_ds_mla B=128 H=128 ctx=4096' >/dev/null 2>&1
tail -8 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 300 $N/mlakv_tests --gtest_filter='CudaDecode*:Forms/CudaDecodeForm*:DecodeSplit.*' > /tmp/z/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests.log | head -20 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
