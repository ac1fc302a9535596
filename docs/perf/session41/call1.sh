#!/usr/bin/env bash
# Prepared in session 40 for session 41's first call. Bundle .gl/s42.txz (-C .gl): m42 = main
# (the one-pass merge at eight in flight, opt-in); mgc = main + docs/perf/session40/arrive-default.patch
# (the merge's chain after the last arrival shortened: the last arrival does not poll, the count
# past its arrivals after the merge; and the merge the default where 2 · parts ≤ 5 · batch, with
# MLAKV_DECODE_FUSED=combine to keep the combine grid; the test
# InGridMergeIsTheDefaultWhereRequestsHaveAboutTwoPartials). To rebuild: `git apply` the patch,
# build, copy to .gl/mgc, build build-trace's mlakv, copy to .gl/trmgc, `git checkout src tests`,
# build, copy to .gl/m42.
#   1. A/B m42 / m42 merge / mgc merge / mgc (its default: the merge at B=32 H=128 only).
#   2. mgc's fused-path, merge, graph and NaN-row tests (~150 s), memcheck on the merge.
#   3. Traces of mgc (trmgc) at B=1 H=16 64K and B=32 H=128 1K, with the merge (trmgcm) and with
#      the combine grid: where a merged step's time goes after the last partial is stored
#      (scripts/decode_trace.py prints the merge's four step words beside the combine's).
# call2.sh: the rest of mgc's decode suite, and on an H200 m42's full bench (decode-h200.json).
set -u
BUNDLE=${BUNDLE:-.gl/s42.txz} LIMIT=${LIMIT:-360}
. scripts/call-lib.sh
call_start $BUNDLE
call_ab ab .gl/m42 .gl/m42@MLAKV_DECODE_FUSED=merge .gl/mgc@MLAKV_DECODE_FUSED=merge .gl/mgc -- \
  'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=128 ctx=32768' 'fp8 B=1 H=16 ctx=65536' 'bf16 B=1 H=16 ctx=1024' \
  'bf16 B=8 H=16 ctx=8192' 'bf16 B=8 H=128 ctx=1024' 'bf16 B=32 H=128 ctx=1024' 'bf16 B=32 H=128 ctx=65536' \
  'fp8 B=32 H=128 ctx=8192' 'fp8_ds_mla B=32 H=128 ctx=1024' 'bf16 B=32 H=16 ctx=1024' 'bf16 B=128 H=128 ctx=4096' \
  'fp8 B=128 H=16 ctx=4096'
call_tests .gl/mgc/mlakv_tests $OUT/tests-mgc-merge.log \
  'CudaDecode.Fused*:CudaDecode.InGridMerge*:CudaDecode.StepsInARow*:CudaDecode.Graph*:CudaDecode.OneNan*:CudaDecode.ClusteredPairsInACapturedGraph' $(( $(left) - 30 ))
call_memcheck .gl/mgc/mlakv_tests 'CudaDecode.InGridMerge*:CudaDecode.FusedGraphReplayBackToBack' 25
cp -r .gl/trmgc .gl/trmgcm
export MLAKV_DECODE_FUSED=merge
call_traces 'bf16 B=1 H=16 ctx=65536;bf16 B=32 H=128 ctx=1024' trmgcm
export MLAKV_DECODE_FUSED=combine
call_traces 'bf16 B=1 H=16 ctx=65536;bf16 B=32 H=128 ctx=1024' trmgc
unset MLAKV_DECODE_FUSED
call_end
