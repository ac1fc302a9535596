#!/usr/bin/env bash
# Session 40, call 3 (asked of an H200): the other half of m40's decode suite (call2.sh ran the
# first), memcheck on the merge and on a default path; on an H200, m40's full bench
# (decode-h200.json, the README's H200 column) and the RS producer at 1 against 2 tiles in flight.
set -u
BUNDLE=${BUNDLE:-.gl/s40.txz} LIMIT=${LIMIT:-420}
. scripts/call-lib.sh
call_start $BUNDLE
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  timeout 60 .gl/m40/mlakv bench decode --json $OUT/decode-h200.json > /tmp/z/n/bench-m40.log 2>&1
  echo "bench m40 rc=$? t=$SECONDS" | tee -a "$S"
  call_ab ab-inflight .gl/m40 .gl/m40@MLAKV_DECODE_RS_INFLIGHT=2 -- \
    'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=1 H=16 ctx=65536' \
    'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8 B=64 H=32 ctx=32768'
fi
call_tests .gl/m40/mlakv_tests $OUT/tests-m40-b.log \
  'CudaDecode*-CudaDecode.FusedSmallBatch:CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference' $(( $(left) - 50 ))
call_memcheck .gl/m40/mlakv_tests 'CudaDecode.InGridMergeTakesAnyWorkspace:CudaDecode.FusedGraphReplayBackToBack:CudaDecode.ManyShortRequests' 45
call_end
