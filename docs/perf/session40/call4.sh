#!/usr/bin/env bash
# Session 40, call 4. Bundle .gl/s41.txz (-C .gl): m40 = main ec49c7f (the merge of mg2); m41 =
# the merge in one pass (online (LSE, o) folding, 16 pairs in flight a lane, shuffles between an
# item's lanes, up to 128 slices); m41k8 = the same with 8 pairs in flight.
#   1. A/B m40 / m41 merge / m41k8 merge / m41 / m41k8 (the default paths must not move).
#   2. m41's merge tests (the NaN rows now in both modes too) and the 64-row forms, m41k8's merge
#      tests, memcheck, and FusedSmallBatch on m41 if time is left.
set -u
BUNDLE=${BUNDLE:-.gl/s41.txz} LIMIT=${LIMIT:-500}
. scripts/call-lib.sh
call_start $BUNDLE
call_ab ab .gl/m40 .gl/m41@MLAKV_DECODE_FUSED=merge .gl/m41k8@MLAKV_DECODE_FUSED=merge .gl/m41 .gl/m41k8 -- \
  'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=128 ctx=32768' 'fp8 B=1 H=16 ctx=65536' 'bf16 B=1 H=16 ctx=1024' \
  'bf16 B=8 H=16 ctx=8192' 'bf16 B=8 H=128 ctx=1024' 'bf16 B=32 H=128 ctx=1024' 'bf16 B=32 H=16 ctx=1024' \
  'fp8 B=32 H=128 ctx=8192' 'bf16 B=128 H=128 ctx=4096' 'fp8 B=128 H=16 ctx=4096' 'fp8 B=128 H=128 ctx=4096' \
  'fp8 B=64 H=32 ctx=32768'
call_tests .gl/m41/mlakv_tests $OUT/tests-m41.log \
  'CudaDecode.FusedOneRequestLongContext:CudaDecode.FusedGraph*:CudaDecode.InGridMerge*:CudaDecode.StepsInARow*:CudaDecode.Graph*:CudaDecode.OneNan*:Forms/CudaDecodeForm.*' $(( $(left) - 30 ))
call_tests .gl/m41k8/mlakv_tests $OUT/tests-m41k8.log \
  'CudaDecode.FusedOneRequestLongContext:CudaDecode.InGridMerge*:CudaDecode.OneNan*' $(( $(left) - 20 ))
call_memcheck .gl/m41/mlakv_tests 'CudaDecode.InGridMergeTakesAnyWorkspace:CudaDecode.FusedGraphReplayBackToBack' 15
[ $(left) -gt 100 ] && call_tests .gl/m41/mlakv_tests $OUT/tests-m41-fsb.log 'CudaDecode.FusedSmallBatch' $(( $(left) - 5 ))
call_end
