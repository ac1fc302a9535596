#!/usr/bin/env bash
# Session 37, call 4: the RS producer's tiles in flight as a run-time value (rt = main with
# DecodeArgs::rs_inflight, MLAKV_DECODE_RS_INFLIGHT; default 1) against m37 (the same cap as a
# constant), and rt at 2 in flight (the old cap2 through the variable); rt's register-operand
# tests at 1 and at 2, memcheck at 2.
#   Bundle .gl/b40.txz (-C .gl): rt (mlakv, mlakv_tests), m37 (mlakv).
set -u
BUNDLE=${BUNDLE:-.gl/b40.txz} LIMIT=${LIMIT:-420}
. scripts/call-lib.sh
call_start $BUNDLE
OUT=/tmp/z/ab ROUNDS=${ROUNDS:-3} AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m37 .gl/rt .gl/rt@MLAKV_DECODE_RS_INFLIGHT=2 -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=8 H=16 ctx=1024' \
  'fp8 B=1 H=16 ctx=65536' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8 B=64 H=32 ctx=32768' >/dev/null 2>&1
cp /tmp/z/ab/ab.log /tmp/z/n/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -10 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
F='Forms/CudaDecodeFp8Form.*/rs:CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference:CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.ManyShortRequests:CudaDecode.FormatsHeadsQueries:CudaDecode.OneNan*:CudaDecode.Fp8DsMla*'
for n in 1 2; do
  MLAKV_DECODE_RS_INFLIGHT=$n timeout 140 .gl/rt/mlakv_tests --gtest_filter="$F" > $OUT/tests-rt$n.log 2>&1
  echo "rt tests in_flight=$n rc=$? t=$SECONDS" | tee -a $S
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure" $OUT/tests-rt$n.log | head -6 | tee -a $S
done
[ $(left) -gt 25 ] && MLAKV_DECODE_RS_INFLIGHT=2 timeout $(( $(left) - 10 )) compute-sanitizer --tool memcheck .gl/rt/mlakv_tests \
  --gtest_filter='CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.ManyShortRequests' > /tmp/z/n/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -2 /tmp/z/n/memcheck.log | tee -a $S
call_end
