#!/usr/bin/env bash
# Session 41, call 2 (after call1.sh; bundle .gl/s42.txz): the rest of mgc's decode suite
# (~370 s on an H100), then on an H200 m42's full bench as decode-h200.json (the README's H200
# column is session 31's).
set -u
BUNDLE=${BUNDLE:-.gl/s42.txz} LIMIT=${LIMIT:-500}
. scripts/call-lib.sh
call_start $BUNDLE
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  timeout 55 .gl/m42/mlakv bench decode --json $OUT/decode-h200.json > /tmp/z/n/bench-m42.log 2>&1
  echo "bench m42 rc=$? t=$SECONDS" | tee -a "$S"
fi
call_tests .gl/mgc/mlakv_tests $OUT/tests-mgc-rest.log \
  'CudaDecode*:Forms/*-CudaDecode.Fused*:CudaDecode.InGridMerge*:CudaDecode.StepsInARow*:CudaDecode.Graph*:CudaDecode.OneNan*:CudaDecode.ClusteredPairsInACapturedGraph' $(( $(left) - 5 ))
call_end
