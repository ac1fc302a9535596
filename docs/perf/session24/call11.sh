#!/usr/bin/env bash
# session 24, call 11: the final main's lock-step form (m24j, its refill-then-Q·Kᵀ step shared by
# both warpgroups): its tests, memcheck, and a one-round A/B against the seesaw.
set -u
tar xzf .gl/b24j.tgz; N=.gl/m24j; mkdir -p $OUT /tmp/z
timeout 120 $N/mlakv_tests --gtest_filter='*CudaDecodeForm*ls*:CudaDecode.LockStep*' > /tmp/z/tests-ls.log 2>&1
echo "ls tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests-ls.log | head -10 | tee -a $OUT/summary.log
MLAKV_DECODE_FORM=ls timeout 150 compute-sanitizer --tool memcheck --error-exitcode 1 $N/mlakv_tests --gtest_filter='CudaDecode.LockStepManyRequestsPerPart' > /tmp/z/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "ERROR SUMMARY|PASSED|FAILED" /tmp/z/memcheck.log | head -3 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=1 AB_TIMEOUT=60 scripts/ab-decode.sh $N $N@MLAKV_DECODE_FORM=ls -- 'bf16 B=128 H=128 ctx=4096' 'bf16 B=32 H=128 ctx=8192' >/dev/null 2>&1
tail -4 /tmp/z/ab/ab.log | tee -a $OUT/summary.log
echo "end t=$SECONDS" | tee -a $OUT/summary.log
