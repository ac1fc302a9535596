#!/usr/bin/env bash
# session 24, call 10: m24i — the lock-step issuer without local memory or divisions: stamps, A/B, its tests.
set -u
tar xzf .gl/b24i.tgz; O=.gl/m23ecli; N=.gl/m24i; TR=.gl/m24itrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
d=/tmp/z/tr/b128; mkdir -p $d
MLAKV_DECODE_FORM=ls MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --iters 20 > $d.log 2>&1
echo "trace rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -1 $d.log | tee -a $OUT/summary.log; cp $d/*.bin $OUT/trace-b128.bin
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $O $N $N@MLAKV_DECODE_FORM=ls -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=8 H=128 ctx=65536' >/dev/null 2>&1
tail -6 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 120 $N/mlakv_tests --gtest_filter='*CudaDecodeForm*ls*:CudaDecode.LockStep*' > /tmp/z/tests-ls.log 2>&1
echo "ls tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests-ls.log | head -10 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
