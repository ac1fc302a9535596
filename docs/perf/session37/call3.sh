#!/usr/bin/env bash
# Session 37, call 3: the RS consumers' first Q loaded at the start (qe = main + that change, with
# mlakv_tests) against m37 (main with one tile in flight); traces of both (trcap1 = m37's kernels,
# trqe); qe's tests on every form that has the register-operand kernels, memcheck on a subset.
#   Bundle .gl/b39.txz (-C .gl): qe (mlakv, mlakv_tests), m37, trcap1, trqe (mlakv).
set -u
BUNDLE=${BUNDLE:-.gl/b39.txz} LIMIT=${LIMIT:-500}
. scripts/call-lib.sh
call_start $BUNDLE
call_ab ab .gl/m37 .gl/qe -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=8 H=16 ctx=1024' \
  'fp8 B=8 H=16 ctx=8192' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=1 H=16 ctx=8192' 'fp8_ds_mla B=128 H=16 ctx=4096' \
  'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8_ds_mla B=8 H=16 ctx=1024' 'fp8 B=64 H=32 ctx=32768' \
  'fp8 B=8 H=32 ctx=65536' 'fp8 B=32 H=16 ctx=1024'
call_traces 'fp8 B=128 H=16 ctx=4096;fp8 B=8 H=16 ctx=1024' trcap1 trqe
F='Forms/CudaDecodeFp8Form.*/rs:CudaDecode.FormatsHeadsQueries:CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.DsMlaSm90Forms:CudaDecode.ManyShortRequests:CudaDecode.OneNan*:CudaDecode.LongContextOneRequest:CudaDecode.Fp8*:CudaDecode.Fused*:CudaDecode.QueryE4m3*:CudaDecode.DcpShards:CudaDecode.MaskedTokens*:CudaDecode.StepsInARow*:CudaDecode.Graph*'
call_tests .gl/qe/mlakv_tests $OUT/tests-qe.log "$F" $(( $(left) - 70 ))
call_memcheck .gl/qe/mlakv_tests 'CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.DsMlaSm90Forms:CudaDecode.FusedSmallBatch' $(( $(left) - 10 ))
call_end
