#!/usr/bin/env bash
# Prepared in session 36 for session 37's first call (decode-notes, "Plan for the next session
# (session 36's version)"). Bundle .gl/b37.tgz (-C .gl), every build on main ad15b35:
#   g36 = main; ah36 = the look-ahead producer at 16 rows (session36/ahead16.patch); cap1 / cap2 =
#   session36/inflight.patch with -DMLAKV_RS_AHEAD16=1 -DMLAKV_RS_INFLIGHT=1 / 2 (the look-ahead
#   at 16 rows, at most 1 / 2 tiles' copies in flight; cap1 with mlakv_tests); trg36 / trcap1 /
#   trcap2 = trace builds of g36, cap1 and cap2.
#   1. A/B g36 / ah36 / cap1 / cap2, three rounds.   2. Traces (CTA ends: the tail).
#   3. cap1's register-operand tests and memcheck.   4. g36's full bench (an H200: decode-h200.json).
set -u
BUNDLE=${BUNDLE:-.gl/b37.txz} LIMIT=${LIMIT:-540}
. scripts/call-lib.sh
call_start $BUNDLE
call_ab ab ${AB_VARIANTS:-.gl/g36 .gl/ah36 .gl/cap1 .gl/cap2} -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=8 H=16 ctx=1024' \
  'fp8 B=1 H=16 ctx=65536' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8 B=64 H=32 ctx=32768' 'bf16 B=128 H=16 ctx=4096'
call_traces 'fp8 B=128 H=16 ctx=4096;fp8 B=64 H=16 ctx=16384' trg36 trcap1 trcap2
F='Forms/CudaDecodeFp8Form.*/rs:CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.DsMlaSm90Forms:CudaDecode.ManyShortRequests:CudaDecode.OneNan*:CudaDecode.LongContextOneRequest:CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference'
call_tests .gl/cap1/mlakv_tests /tmp/z/n/tests-cap1.log "$F" 200
call_memcheck .gl/cap1/mlakv_tests 'CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.ManyShortRequests' 45
[ $(left) -gt 45 ] && timeout 40 .gl/g36/mlakv bench decode --json $OUT/decode-g36.json > /tmp/z/n/bench-g36.log 2>&1
echo "bench g36 rc=$? t=$SECONDS" | tee -a $S
call_end
