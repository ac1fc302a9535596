#!/usr/bin/env bash
# Session 41, call 3 (bundle .gl/s43.txz, -C .gl): mgc = main c591f6e (the merge by default at
# B=32 at 64-row CTAs); mf = mgc + the merge's walk by additions (MergeWalk, unconditional loads);
# mf64 = mf with -DMLAKV_DECODE_MERGE_SLICES=64; trmf = mf's trace build.
#   1. A/B mgc / mgc merge / mf merge / mf64 merge / mf (its default) on the B ≤ 32 shapes and
#      two B=128 rows (prediction in PERF.md, "the merge's walk by additions").
#   2. mf's fused-path, merge, graph, NaN-row and 64-row form tests (both modes), memcheck.
#   3. Traces of trmf with the merge at B=1 H=16 64K and B=32 H=128 1K: the merge's legs.
set -u
BUNDLE=${BUNDLE:-.gl/s43.txz} LIMIT=${LIMIT:-400}
. scripts/call-lib.sh
call_start $BUNDLE
call_ab ab .gl/mgc .gl/mgc@MLAKV_DECODE_FUSED=merge .gl/mf@MLAKV_DECODE_FUSED=merge .gl/mf64@MLAKV_DECODE_FUSED=merge .gl/mf -- \
  'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=128 ctx=32768' 'fp8 B=1 H=16 ctx=65536' 'bf16 B=1 H=16 ctx=1024' \
  'bf16 B=8 H=16 ctx=8192' 'bf16 B=8 H=128 ctx=1024' 'bf16 B=32 H=128 ctx=1024' 'bf16 B=32 H=128 ctx=65536' \
  'fp8 B=32 H=128 ctx=8192' 'fp8_ds_mla B=32 H=128 ctx=1024' 'bf16 B=32 H=16 ctx=1024' 'bf16 B=128 H=128 ctx=4096' \
  'fp8 B=128 H=16 ctx=4096'
call_tests .gl/mf/mlakv_tests $OUT/tests-mf.log \
  'CudaDecode.Fused*:CudaDecode.InGridMerge*:CudaDecode.StepsInARow*:CudaDecode.Graph*:CudaDecode.OneNan*:CudaDecode.ClusteredPairsInACapturedGraph:Forms/CudaDecodeForm.*' $(( $(left) - 40 ))
call_memcheck .gl/mf/mlakv_tests 'CudaDecode.InGridMerge*:CudaDecode.FusedGraphReplayBackToBack' 25
export MLAKV_DECODE_FUSED=merge
call_traces 'bf16 B=1 H=16 ctx=65536;bf16 B=32 H=128 ctx=1024' trmf
unset MLAKV_DECODE_FUSED
call_end
