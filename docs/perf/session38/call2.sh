#!/usr/bin/env bash
# Session 38, call 2. Bundle .gl/s38b.txz (-C .gl): m38 = main 7d47679 (mlakv, mlakv_tests), mg =
# the in-grid merge in column slices without the zeroing grid (this session's build-cuda).
#   1. mg's decode tests on the fused paths (default and MLAKV_DECODE_FUSED=merge), memcheck on two.
#   2. A/B m38 / mg / mg with MLAKV_DECODE_FUSED=merge on the B <= 32 shapes, and two B=128 rows
#      (mg's default path must equal m38's there).
set -u
BUNDLE=${BUNDLE:-.gl/s38b.txz} LIMIT=${LIMIT:-560}
. scripts/call-lib.sh
call_start $BUNDLE
call_tests .gl/mg/mlakv_tests $OUT/tests-mg.log \
  'CudaDecode.Fused*:CudaDecode.InGridMerge*:CudaDecode.StepsInARow*:CudaDecode.Graph*:Forms/*:CudaDecode.DcpShards:CudaDecode.ManyShortRequests' 200
call_memcheck .gl/mg/mlakv_tests 'CudaDecode.InGridMergeTakesAnyWorkspace:CudaDecode.FusedGraphReplayBackToBack' 60
call_ab ab .gl/m38 .gl/mg .gl/mg@MLAKV_DECODE_FUSED=merge -- \
  'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=16 ctx=1024' 'bf16 B=1 H=128 ctx=32768' 'fp8 B=1 H=16 ctx=65536' \
  'fp8 B=1 H=128 ctx=32768' 'fp8_ds_mla B=1 H=128 ctx=32768' 'bf16 B=8 H=16 ctx=8192' 'bf16 B=8 H=128 ctx=8192' \
  'fp8 B=32 H=16 ctx=1024' 'bf16 B=32 H=128 ctx=1024' 'fp8 B=128 H=16 ctx=4096' 'bf16 B=128 H=128 ctx=4096'
call_end
