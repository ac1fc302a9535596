#!/usr/bin/env bash
# Session 37, call 3: the RS consumers' first Q loaded at the start (qe = main + that change, with
# mlakv_tests) against m37 (main with one tile in flight); traces of both (trcap1 = m37's kernels,
# trqe); qe's tests on every form that has the register-operand kernels, memcheck on a subset.
#   Bundle .gl/b39.txz (-C .gl): qe (mlakv, mlakv_tests), m37, trcap1, trqe (mlakv).
set -u
BUNDLE=${BUNDLE:-.gl/b39.txz} LIMIT=${LIMIT:-500}
. scripts/call-lib.sh
call_start $BUNDLE
OUT=/tmp/z/ab ROUNDS=${ROUNDS:-3} AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m37 .gl/qe -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=8 H=16 ctx=1024' \
  'fp8 B=8 H=16 ctx=8192' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=1 H=16 ctx=8192' 'fp8_ds_mla B=128 H=16 ctx=4096' \
  'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8_ds_mla B=8 H=16 ctx=1024' 'fp8 B=64 H=32 ctx=32768' \
  'fp8 B=8 H=32 ctx=65536' 'fp8 B=32 H=16 ctx=1024' >/dev/null 2>&1
cp /tmp/z/ab/ab.log /tmp/z/n/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -15 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
call_traces 'fp8 B=128 H=16 ctx=4096;fp8 B=8 H=16 ctx=1024' trcap1 trqe
F='Forms/CudaDecodeFp8Form.*/rs:CudaDecode.FormatsHeadsQueries:CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.DsMlaSm90Forms:CudaDecode.ManyShortRequests:CudaDecode.OneNan*:CudaDecode.LongContextOneRequest:CudaDecode.Fp8*:CudaDecode.Fused*:CudaDecode.QueryE4m3*:CudaDecode.DcpShards:CudaDecode.MaskedTokens*:CudaDecode.StepsInARow*:CudaDecode.Graph*'
timeout $(( $(left) - 70 )) .gl/qe/mlakv_tests --gtest_filter="$F" > $OUT/tests-qe.log 2>&1
echo "qe tests rc=$? t=$SECONDS" | tee -a $S
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure" $OUT/tests-qe.log | head -8 | tee -a $S
[ $(left) -gt 25 ] && timeout $(( $(left) - 10 )) compute-sanitizer --tool memcheck .gl/qe/mlakv_tests \
  --gtest_filter='CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.DsMlaSm90Forms:CudaDecode.FusedSmallBatch' > /tmp/z/n/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -2 /tmp/z/n/memcheck.log | tee -a $S
call_end
