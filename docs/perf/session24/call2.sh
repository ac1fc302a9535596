#!/usr/bin/env bash
# session 24, call 2: m24b — the seesaw's uniform Q descriptor back (PartSlots), the lock-step
# form's lookups by cp.async and its refills ahead of the landing-gated Q·Kᵀ — A/B against
# session 23's main (m23e), the lock-step tests, and its stamps at B=128 H=128 4K.
set -u
tar xzf .gl/b24b.tgz; O=.gl/m23ecli; N=.gl/m24b; TR=.gl/m24btrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
MLAKV_DECODE_FORM=ls timeout 60 $N/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --iters 3 > /tmp/z/probe.log 2>&1
echo "probe rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -2 /tmp/z/probe.log | tee -a $OUT/summary.log
d=/tmp/z/tr/b128; mkdir -p $d
MLAKV_DECODE_FORM=ls MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --iters 20 > $d.log 2>&1
echo "trace rc=$? t=$SECONDS" | tee -a $OUT/summary.log
cp $d/*.bin $OUT/trace-b128.bin 2>/dev/null
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $O $N $N@MLAKV_DECODE_FORM=ls -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=1 H=128 ctx=32768' 'fp8 B=128 H=128 ctx=4096' >/dev/null 2>&1
tail -6 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 200 $N/mlakv_tests --gtest_filter='*CudaDecodeForm*ls*:CudaDecode.LockStep*' > /tmp/z/tests-ls.log 2>&1
echo "ls tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests-ls.log | head -20 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
