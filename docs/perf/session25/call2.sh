#!/usr/bin/env bash
# session 25, call 2: m25c — lock-step variant (c): softmax B first, then P0·V0 (right) and K0 4-8
# refilled before P1·V1; its tests, an A/B against session 24's main, stamps, memcheck.
set -u
tar xzf .gl/b25c.tgz; tar xzf .gl/b24j.tgz; O=.gl/m24j; N=.gl/m25c; TR=.gl/m25ctrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 120 $N/mlakv_tests --gtest_filter='*CudaDecodeForm*ls*:CudaDecode.LockStep*' > /tmp/z/tests-ls.log 2>&1
echo "ls tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests-ls.log | head -10 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $O $O@MLAKV_DECODE_FORM=ls $N@MLAKV_DECODE_FORM=ls -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=8 H=128 ctx=65536' 'bf16 B=1 H=128 ctx=32768' >/dev/null 2>&1
tail -8 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
d=/tmp/z/tr/b128; mkdir -p $d
MLAKV_DECODE_FORM=ls MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --iters 20 > $d.log 2>&1
echo "trace rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -1 $d.log | tee -a $OUT/summary.log; cp $d/*.bin $OUT/trace-b128.bin
MLAKV_DECODE_FORM=ls timeout 150 compute-sanitizer --tool memcheck --error-exitcode 1 $N/mlakv_tests --gtest_filter='CudaDecode.LockStepManyRequestsPerPart' > /tmp/z/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "ERROR SUMMARY|PASSED|FAILED" /tmp/z/memcheck.log | head -3 | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
