#!/usr/bin/env bash
# session 22, call 4: the combine in one wave of CTAs (m22comb) against call 3's build (m22w2);
# the bf16 producer polling its empty barrier (MLAKV_DECODE_SPIN=1); every CudaDecode test and
# memcheck on the combine's split and empty paths; the full bench decode if the combine wins.
set -u
tar xzf .gl/b22c.tgz; tar xzf .gl/b22d.tgz; G=.gl; W2=$G/m22w2; C=$G/m22comb; mkdir -p $OUT /tmp/y
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
OUT=/tmp/y/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $W2 $C $C@MLAKV_DECODE_SPIN=1 -- 'bf16 B=128 H=128 ctx=4096' 'bf16 B=128 H=16 ctx=4096' 'fp8 B=128 H=16 ctx=4096' 'bf16 B=64 H=16 ctx=16384' 'fp8 B=128 H=128 ctx=4096' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=128 ctx=32768' 'bf16 B=128 H=128 ctx=65536' >/dev/null 2>&1
tail -11 /tmp/y/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 300 $C/mlakv_tests --gtest_filter='CudaDecode.*' > /tmp/y/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which is|FAILED  \]|tests ran|SKIPPED \]" /tmp/y/tests.log | head -40 | tee -a $OUT/summary.log
grep -c "^\[       OK \]" /tmp/y/tests.log | tee -a $OUT/summary.log
timeout 100 compute-sanitizer --tool memcheck $C/mlakv_tests --gtest_filter='CudaDecode.ManyShortRequests:CudaDecode.NearEqualRequestsOnePartEach' > /tmp/y/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -3 /tmp/y/memcheck.log | tee -a $OUT/summary.log
if (( SECONDS < 420 )); then
  timeout 100 $C/mlakv bench decode --json $OUT/decode.json > $OUT/bench-decode.txt 2>&1; echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log
fi
tar czf $OUT/extra.tgz -C /tmp/y .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
