#!/usr/bin/env bash
# Session 36, call 2. Bundle .gl/b36b.tgz (-C .gl): m36 = main 7ce5062 (the kernels of main
# 8b7900b); ps36 = the schedule grid's per-part start records and first-tile block-table L2
# prefetch (mlakv, mlakv_tests); psg36 = ps36 without the warpgroup broadcast in bf16's rows-as-M
# form; trps36 = ps36 with -DMLAKV_DECODE_TRACE=ON.
#   1. ps36's decode suite (every form reads its start from the record now), memcheck on a subset.
#   2. A/B m36 / ps36 / psg36, three rounds.
#   3. Traces of ps36 (the start of a step: schedule -> first tile landed).
#   4. psg36's full bench.
set -u
BUNDLE=${BUNDLE:-.gl/b36b.tgz} LIMIT=${LIMIT:-560}
. scripts/call-lib.sh
call_start $BUNDLE
timeout ${TESTS_S:-330} .gl/ps36/mlakv_tests --gtest_filter='*CudaDecode*' > /tmp/z/n/tests-ps36.log 2>&1
echo "ps36 tests rc=$? t=$SECONDS" | tee -a $S
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure|Expected|Which is" /tmp/z/n/tests-ps36.log | cut -c1-160 | head -14 | tee -a $S
timeout 60 compute-sanitizer --tool memcheck .gl/ps36/mlakv_tests \
  --gtest_filter='CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.ManyShortRequests:CudaDecode.DcpShards' > /tmp/z/n/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -3 /tmp/z/n/memcheck.log | tee -a $S
OUT=/tmp/z/ab ROUNDS=${ROUNDS:-3} AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m36 .gl/ps36 .gl/psg36 -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=8 H=16 ctx=1024' \
  'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8 B=64 H=32 ctx=32768' 'fp8 B=128 H=128 ctx=4096' \
  'bf16 B=128 H=16 ctx=4096' 'bf16 B=64 H=16 ctx=16384' 'bf16 B=32 H=16 ctx=8192' 'bf16 B=1 H=16 ctx=65536' \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=128 H=128 ctx=8192' 'bf16 B=32 H=128 ctx=65536' 'bf16 B=1 H=128 ctx=32768' >/dev/null 2>&1
cp /tmp/z/ab/ab.log /tmp/z/n/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -17 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
mkdir -p /tmp/z/tb-trps36
MLAKV_TRACE_DIR=/tmp/z/tb-trps36 timeout 60 .gl/trps36/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' \
  --only 'bf16 B=128 H=16 ctx=4096' --only 'fp8 B=32 H=16 ctx=8192' > /tmp/z/n/trace-bench-trps36.log 2>&1
echo "trace rc=$? t=$SECONDS" | tee -a $S
python3 scripts/decode_trace.py /tmp/z/tb-trps36/*.bin > /tmp/z/n/trace-trps36.txt 2>&1
tar czf /tmp/z/n/trace-bin-trps36.tgz -C /tmp/z tb-trps36
[ $(left) -gt 60 ] && timeout 50 .gl/psg36/mlakv bench decode --json $OUT/decode-psg36.json > /tmp/z/n/bench-psg36.log 2>&1
echo "bench psg36 rc=$? t=$SECONDS" | tee -a $S
tar czf $OUT/logs.tgz -C /tmp/z n
echo "end t=$SECONDS" | tee -a $S
