#!/usr/bin/env bash
# Session 40, call 2 (asked of an H200). Bundle .gl/s40.txz (-C .gl): m40 = main with the in-grid
# merge rewrite landed (session38/merge.patch with merge_part inline: session 39's mg2, rebuilt).
#   1. m40's full bench: decode-h200.json on an H200 (the README's H200 column, session 31's until now).
#   2. The RS producer at 1 and 2 tiles in flight on the FP8 H=16 shapes (the H200's HBM).
#   3. The merge against the combine grid where the fused path runs (B <= 32): which class wins.
#   4. Half of m40's decode suite (the other half: call3.sh).
set -u
BUNDLE=${BUNDLE:-.gl/s40.txz} LIMIT=${LIMIT:-540}
. scripts/call-lib.sh
call_start $BUNDLE
kind=h100; nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && kind=h200
timeout 90 .gl/m40/mlakv bench decode --json $OUT/decode-$kind.json > /tmp/z/n/bench-m40.log 2>&1
echo "bench m40 rc=$? t=$SECONDS" | tee -a "$S"
call_ab ab-inflight .gl/m40 .gl/m40@MLAKV_DECODE_RS_INFLIGHT=2 -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=1 H=16 ctx=65536' \
  'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8 B=64 H=32 ctx=32768'
call_ab ab-merge .gl/m40 .gl/m40@MLAKV_DECODE_FUSED=merge -- \
  'bf16 B=32 H=128 ctx=1024' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=32 H=128 ctx=65536' 'bf16 B=8 H=128 ctx=1024' \
  'bf16 B=32 H=16 ctx=1024' 'bf16 B=32 H=16 ctx=8192' 'bf16 B=32 H=16 ctx=65536' 'fp8 B=32 H=128 ctx=1024' \
  'fp8 B=32 H=128 ctx=8192' 'fp8_ds_mla B=32 H=128 ctx=1024' 'fp8 B=32 H=16 ctx=1024' 'fp8 B=8 H=16 ctx=1024'
call_tests .gl/m40/mlakv_tests $OUT/tests-m40-a.log \
  'CudaDecode.FusedSmallBatch:CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference:Forms/*' $(( $(left) - 5 ))
call_end
