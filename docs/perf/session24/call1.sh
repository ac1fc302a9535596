#!/usr/bin/env bash
# session 24, call 1: the lock-step form (MLAKV_DECODE_FORM=ls, m24a) — a probe for hangs, its
# tests and the decode tests of the refactored seesaw, A/B against session 23's main (m23e),
# memcheck on the lock-step tests, and its stamps at B=128 H=128 4K.
set -u
tar xzf .gl/b24a.tgz; O=.gl/m23ecli; N=.gl/m24a; TR=.gl/m24atrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
MLAKV_DECODE_FORM=ls timeout 60 $N/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --iters 3 > /tmp/z/probe.log 2>&1
echo "probe rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -4 /tmp/z/probe.log | tee -a $OUT/summary.log
timeout 200 $N/mlakv_tests --gtest_filter='*CudaDecodeForm*ls*:CudaDecode.LockStep*' > /tmp/z/tests-ls.log 2>&1
echo "ls tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|out .* lse" /tmp/z/tests-ls.log | head -40 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $O $N $N@MLAKV_DECODE_FORM=ls -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=128 H=128 ctx=8192' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=8 H=128 ctx=65536' \
  'bf16 B=1 H=128 ctx=32768' 'bf16 B=128 H=128 ctx=1024' 'fp8 B=128 H=128 ctx=4096' >/dev/null 2>&1
tail -9 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
d=/tmp/z/tr/b128; mkdir -p $d
MLAKV_DECODE_FORM=ls MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --iters 20 > $d.log 2>&1
echo "trace rc=$? t=$SECONDS" | tee -a $OUT/summary.log
timeout 240 $N/mlakv_tests --gtest_filter='CudaDecode.*:DecodeSplit.*:-CudaDecode.LockStep*' > /tmp/z/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests.log | head -30 | tee -a $OUT/summary.log
MLAKV_DECODE_FORM=ls timeout 150 compute-sanitizer --tool memcheck --error-exitcode 1 $N/mlakv_tests --gtest_filter='CudaDecode.LockStepManyRequestsPerPart' > /tmp/z/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "ERROR SUMMARY|PASSED|FAILED" /tmp/z/memcheck.log | head -5 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
