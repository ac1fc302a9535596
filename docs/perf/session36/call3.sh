#!/usr/bin/env bash
# Session 36, call 3 (an H200 where one comes). Bundle .gl/b36c.tgz (-C .gl): g36 = main ad15b35
# (no broadcast in bf16's rows-as-M form); psn36 = g36 + each part's start record {lo, hi, first
# request} written by the schedule grid, read in one load (no prefetch; mlakv, mlakv_tests);
# ah36 = g36 with the look-ahead producer at 16 rows (session36/ahead16.patch); tr36 = main
# 7ce5062's trace build, trpsn36 = psn36's.
#   1. A/B g36 / psn36 / ah36, three rounds.   2. traces tr36 / trpsn36 (the step's start).
#   3. psn36's decode tests (all but the widening fp8 forms), memcheck.   4. g36's full bench.
set -u
BUNDLE=${BUNDLE:-.gl/b36c.tgz} LIMIT=${LIMIT:-540}
. scripts/call-lib.sh
call_start $BUNDLE
OUT=/tmp/z/ab ROUNDS=${ROUNDS:-3} AB_TIMEOUT=60 scripts/ab-decode.sh ${AB_VARIANTS:-.gl/g36 .gl/psn36 .gl/ah36} -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=8 H=16 ctx=1024' \
  'fp8 B=1 H=16 ctx=65536' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8 B=64 H=32 ctx=32768' 'bf16 B=128 H=16 ctx=4096' 'bf16 B=32 H=16 ctx=8192' \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=128 H=128 ctx=8192' >/dev/null 2>&1
cp /tmp/z/ab/ab.log /tmp/z/n/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -14 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
for v in tr36 trpsn36; do
  mkdir -p /tmp/z/tb-$v
  MLAKV_TRACE_DIR=/tmp/z/tb-$v timeout 60 .gl/$v/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' \
    --only 'fp8 B=32 H=16 ctx=8192' --only 'bf16 B=128 H=16 ctx=4096' > /tmp/z/n/trace-bench-$v.log 2>&1
  echo "trace $v rc=$? t=$SECONDS" | tee -a $S
  python3 scripts/decode_trace.py /tmp/z/tb-$v/*.bin > /tmp/z/n/trace-$v.txt 2>&1
done
tar czf /tmp/z/n/trace-bins.tgz -C /tmp/z tb-tr36 tb-trpsn36
timeout 50 .gl/g36/mlakv bench decode --json $OUT/decode-g36.json > /tmp/z/n/bench-g36.log 2>&1
echo "bench g36 rc=$? t=$SECONDS" | tee -a $S
timeout $(( $(left) - 45 )) .gl/psn36/mlakv_tests --gtest_filter='*CudaDecode*:-Forms/CudaDecodeFp8Form.*/widen' > /tmp/z/n/tests-psn36.log 2>&1
echo "psn36 tests rc=$? t=$SECONDS" | tee -a $S
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure|Expected|Which is" /tmp/z/n/tests-psn36.log | cut -c1-160 | head -14 | tee -a $S
grep -c "^\[       OK" /tmp/z/n/tests-psn36.log | tee -a $S
[ $(left) -gt 25 ] && timeout $(( $(left) - 12 )) compute-sanitizer --tool memcheck .gl/psn36/mlakv_tests \
  --gtest_filter='CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.ManyShortRequests:CudaDecode.DcpShards' > /tmp/z/n/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -3 /tmp/z/n/memcheck.log | tee -a $S
tar czf $OUT/logs.tgz -C /tmp/z n
echo "end t=$SECONDS" | tee -a $S
