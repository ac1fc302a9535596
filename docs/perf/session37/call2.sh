#!/usr/bin/env bash
# Session 37, call 2: main with the producer's cap of one tile in flight (m37 = build-cuda at the
# landing commit; its RS kernels' SASS = call 1's cap1) against g36 (main ad15b35), cap2 and ah36,
# now with the H=128 FP8 shapes; then m37's full bench and its decode suite, memcheck in the time left.
#   Bundle .gl/b38.txz (-C .gl): m37 (mlakv, mlakv_tests), g36, cap2, ah36 (mlakv).
set -u
BUNDLE=${BUNDLE:-.gl/b38.txz} LIMIT=${LIMIT:-560}
. scripts/call-lib.sh
call_start $BUNDLE
call_ab ab .gl/g36 .gl/m37 .gl/cap2 .gl/ah36 -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=16 ctx=8192' 'fp8 B=8 H=16 ctx=1024' \
  'fp8 B=1 H=16 ctx=65536' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8 B=64 H=32 ctx=32768' 'fp8 B=128 H=128 ctx=4096' 'fp8_ds_mla B=128 H=128 ctx=4096' \
  'fp8 B=1 H=128 ctx=32768'
timeout 45 .gl/m37/mlakv bench decode --json $OUT/decode-m37.json > /tmp/z/n/bench-m37.log 2>&1
echo "bench m37 rc=$? t=$SECONDS" | tee -a $S
call_tests .gl/m37/mlakv_tests $OUT/tests-m37.log '*CudaDecode*:DecodeCpu.*' $(( $(left) - 60 ))
call_memcheck .gl/m37/mlakv_tests 'CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.DsMlaSm90Forms' $(( $(left) - 12 ))
call_end
