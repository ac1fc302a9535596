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
call_ab ab .gl/m37 .gl/rt .gl/rt@MLAKV_DECODE_RS_INFLIGHT=2 -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=8 H=16 ctx=1024' \
  'fp8 B=1 H=16 ctx=65536' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8 B=64 H=32 ctx=32768'
F='Forms/CudaDecodeFp8Form.*/rs:CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference:CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.ManyShortRequests:CudaDecode.FormatsHeadsQueries:CudaDecode.OneNan*:CudaDecode.Fp8DsMla*'
for n in 1 2; do
  MLAKV_DECODE_RS_INFLIGHT=$n call_tests .gl/rt/mlakv_tests $OUT/tests-rt$n.log "$F" 140
done
MLAKV_DECODE_RS_INFLIGHT=2 call_memcheck .gl/rt/mlakv_tests 'CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.ManyShortRequests' $(( $(left) - 10 ))
call_end
