#!/usr/bin/env bash
# Session 40, call 4. Bundle .gl/s41.txz (-C .gl): m40 = main ec49c7f (the merge of mg2); m41 =
# the merge in one pass (online (LSE, o) folding, 16 pairs in flight a lane, shuffles between an
# item's lanes, up to 128 slices); m41k8 = the same with 8 pairs in flight.
#   1. A/B m40 / m41 merge / m41k8 merge / m41 / m41k8 (the default paths must not move).
#   2. m41's merge tests (the NaN rows now in both modes too) and the 64-row forms; memcheck.
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
  'CudaDecode.Fused*:CudaDecode.InGridMerge*:CudaDecode.StepsInARow*:CudaDecode.Graph*:CudaDecode.OneNan*:Forms/CudaDecodeForm.*' $(( $(left) - 50 ))
call_tests .gl/m41k8/mlakv_tests $OUT/tests-m41k8.log \
  'CudaDecode.FusedOneRequestLongContext:CudaDecode.InGridMerge*:CudaDecode.OneNan*' $(( $(left) - 50 ))
call_memcheck .gl/m41/mlakv_tests 'CudaDecode.InGridMergeTakesAnyWorkspace:CudaDecode.FusedGraphReplayBackToBack' 45
call_end
