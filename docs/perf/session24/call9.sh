#!/usr/bin/env bash
# session 24, call 9: memcheck of the final lock-step form (m24h) on its many-requests test.
set -u
tar xzf .gl/b24h.tgz; N=.gl/m24h; mkdir -p $OUT /tmp/z
MLAKV_DECODE_FORM=ls timeout 200 compute-sanitizer --tool memcheck --error-exitcode 1 $N/mlakv_tests --gtest_filter='CudaDecode.LockStepManyRequestsPerPart' > /tmp/z/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "ERROR SUMMARY|PASSED|FAILED" /tmp/z/memcheck.log | head -5 | tee -a $OUT/summary.log
cp /tmp/z/memcheck.log $OUT/
