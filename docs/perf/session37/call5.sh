#!/usr/bin/env bash
# Session 37, call 5: the fused path (no schedule grid) up to 32 requests (fz = main + kFusedMaxBatch
# 32, with mlakv_tests) against its own three-kernel path (MLAKV_DECODE_FUSED=0, the same binary)
# and m37 (main); fz's decode tests, the B <= 32 ones first, memcheck on the fused ones.
#   Bundle .gl/b41.txz (-C .gl): fz (mlakv, mlakv_tests), m37 (mlakv).
set -u
BUNDLE=${BUNDLE:-.gl/b41.txz} LIMIT=${LIMIT:-330}
. scripts/call-lib.sh
call_start $BUNDLE
call_ab ab .gl/m37 .gl/fz .gl/fz@MLAKV_DECODE_FUSED=0 -- \
  'bf16 B=32 H=16 ctx=1024' 'bf16 B=32 H=16 ctx=8192' 'fp8 B=32 H=16 ctx=1024' 'fp8 B=32 H=16 ctx=8192' \
  'fp8_ds_mla B=32 H=16 ctx=1024' 'bf16 B=32 H=128 ctx=1024' 'bf16 B=32 H=128 ctx=8192' 'fp8 B=32 H=128 ctx=1024' \
  'fp8 B=32 H=16 ctx=65536' 'bf16 B=128 H=16 ctx=4096' 'fp8 B=128 H=16 ctx=4096' 'fp8 B=8 H=16 ctx=1024' \
  'bf16 B=1 H=16 ctx=65536'
F1='CudaDecode.Fused*:CudaDecode.Graph*:CudaDecode.ClusteredPairsInACapturedGraph:CudaDecode.StepsInARow*:CudaDecode.ManyShortRequests:CudaDecode.NearEqual*:CudaDecode.AlignedSplits*:CudaDecode.LockStep*:CudaDecode.DcpShards:CudaDecode.FormatsHeadsQueries:CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.QueryE4m3*:CudaDecode.MaskedTokens*:CudaDecode.OneNan*:CudaDecode.MmaKernelPath:CudaDecode.Sm90SplitRowsPlainLaunches'
call_tests .gl/fz/mlakv_tests $OUT/tests-fz.log "$F1" $(( $(left) - 75 ))
call_memcheck .gl/fz/mlakv_tests 'CudaDecode.FusedGraphReplayBackToBack:CudaDecode.GraphCaptureFollowsDeviceLengths:CudaDecode.BadBlockIds*' $(( $(left) - 10 ))
call_tests .gl/fz/mlakv_tests /tmp/z/n/tests-fz-rest.log "*CudaDecode*:-$F1" $(( $(left) - 5 ))
call_end
