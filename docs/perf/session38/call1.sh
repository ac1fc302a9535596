#!/usr/bin/env bash
# Prepared in session 37 for session 38's first call. Bundle .gl/s38.txz (-C .gl): m38 = main at
# 7d47679 (mlakv, mlakv_tests; to rebuild: build-cuda's mlakv and mlakv_tests at that commit).
#   1. The decode tests session 37's call 5 had no time for (the fused path now takes B <= 32,
#      the opt-in forms included), memcheck on the parametrized forms.
#   2. An H200: the RS producer at 1 and 2 tiles in flight (MLAKV_DECODE_RS_INFLIGHT, same binary).
#   3. main's full bench: decode-h200.json on an H200, else decode.json.
set -u
BUNDLE=${BUNDLE:-.gl/s38.txz} LIMIT=${LIMIT:-540}
. scripts/call-lib.sh
call_start $BUNDLE
F='CudaDecode.ReferenceVectors:CudaDecode.Fp8RowTilePairsMatchReference:Forms/*:CudaDecode.StepWaitsForTheKernelBeforeIt'
call_tests .gl/m38/mlakv_tests $OUT/tests-m38.log "$F" 240
call_memcheck .gl/m38/mlakv_tests 'Forms/CudaDecodeForm.*/ls:CudaDecode.ReferenceVectors' 60
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  OUT=/tmp/z/ab ROUNDS=3 AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m38 .gl/m38@MLAKV_DECODE_RS_INFLIGHT=2 -- \
    'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=1 H=16 ctx=65536' \
    'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8 B=64 H=32 ctx=32768' >/dev/null 2>&1
  cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null; tail -9 /tmp/z/ab/ab.log | tee -a $S
  J=decode-h200.json
else
  J=decode.json
fi
echo "ab t=$SECONDS" | tee -a $S
[ $(left) -gt 45 ] && timeout 45 .gl/m38/mlakv bench decode --json $OUT/$J > /tmp/z/n/bench-m38.log 2>&1
echo "bench m38 rc=$? t=$SECONDS ($J)" | tee -a $S
call_end
