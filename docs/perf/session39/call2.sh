#!/usr/bin/env bash
# Session 39, call 2: call 1 leaner (call 1's machine was taken back mid-run; ~500 s of device
# time left). The same bundle and A/B; the merge's own tests only, memcheck on one; no H200 extras.
set -u
BUNDLE=${BUNDLE:-.gl/s38c.txz} LIMIT=${LIMIT:-330}
. scripts/call-lib.sh
call_start $BUNDLE
call_ab ab .gl/m38 .gl/mg2 .gl/mg2@MLAKV_DECODE_FUSED=merge .gl/mg2n .gl/mg2n@MLAKV_DECODE_FUSED=merge -- \
  'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=16 ctx=1024' 'bf16 B=1 H=128 ctx=32768' 'fp8 B=1 H=16 ctx=65536' \
  'fp8_ds_mla B=1 H=128 ctx=32768' 'bf16 B=8 H=16 ctx=8192' 'bf16 B=8 H=128 ctx=8192' \
  'fp8 B=32 H=16 ctx=1024' 'bf16 B=32 H=128 ctx=1024' 'bf16 B=128 H=128 ctx=4096' 'fp8 B=128 H=16 ctx=4096'
call_tests .gl/mg2n/mlakv_tests $OUT/tests-mg2n.log \
  'CudaDecode.Fused*:CudaDecode.InGridMerge*:CudaDecode.StepsInARow*:CudaDecode.Graph*:CudaDecode.DcpShards' $(( $(left) - 45 ))
call_memcheck .gl/mg2n/mlakv_tests 'CudaDecode.InGridMergeTakesAnyWorkspace' 35
call_end
