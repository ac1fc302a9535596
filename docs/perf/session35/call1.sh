#!/usr/bin/env bash
# session 35, call 1: bundle .gl/b35.tgz (-C .gl): m35 = main e136cef (mlakv, mlakv_tests);
# ahead35 = session34/ahead-on-605c3da.patch (RS producer: one lookup a tile, lookups a tile ahead);
# aheadbf35 = session35/aheadbf.patch (the same look-ahead shared with the bf16 producer; mlakv,
# mlakv_tests); rel35 = session35/rel-on-main.patch (aheadbf + RS stages released before the last P·V
# wait). A/B (3 rounds), aheadbf's tests and memcheck, full benches, the rest of the suite.
set -u
BUNDLE=${BUNDLE:-.gl/b35.tgz} LIMIT=${LIMIT:-560}
tar xzf $BUNDLE -C .gl; mkdir -p $OUT /tmp/z/n
left() { echo $((LIMIT - SECONDS)); }
S=$OUT/summary.log
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv | tee $S
OUT=/tmp/z/ab ROUNDS=${ROUNDS:-3} AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m35 .gl/ahead35 .gl/aheadbf35 .gl/rel35 -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=32 H=16 ctx=8192' \
  'fp8 B=8 H=16 ctx=1024' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8 B=64 H=32 ctx=32768' 'fp8 B=128 H=128 ctx=4096' 'bf16 B=128 H=16 ctx=4096' 'bf16 B=64 H=16 ctx=16384' \
  'bf16 B=1 H=16 ctx=65536' 'bf16 B=8 H=16 ctx=1024' 'bf16 B=1 H=128 ctx=32768' 'bf16 B=128 H=128 ctx=4096' >/dev/null 2>&1
cp /tmp/z/ab/ab.log /tmp/z/n/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -17 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
F='Forms/CudaDecodeFp8Form.DsMla*/rs:CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:Forms/CudaDecodeFp8Form.SixteenAndThirtyTwo*/rs:CudaDecode.OneNan*:CudaDecode.DcpShards:CudaDecode.ManyShortRequests:CudaDecode.DsMlaSm90Forms:CudaDecode.FusedSmallBatch:CudaDecode.GraphCaptureFollowsDeviceLengths:CudaDecode.LongContextOneRequest'
timeout ${TESTS_S:-170} .gl/aheadbf35/mlakv_tests --gtest_filter="$F" > /tmp/z/n/tests-aheadbf.log 2>&1
echo "aheadbf tests rc=$? t=$SECONDS" | tee -a $S
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Expected|Which is" /tmp/z/n/tests-aheadbf.log | cut -c1-160 | head -12 | tee -a $S
[ $(left) -gt 70 ] && timeout 50 compute-sanitizer --tool memcheck .gl/aheadbf35/mlakv_tests --gtest_filter='CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.DcpShards' > /tmp/z/n/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -3 /tmp/z/n/memcheck.log | tee -a $S
for v in aheadbf35 rel35 m35; do
  [ $(left) -gt 60 ] && timeout 45 .gl/$v/mlakv bench decode --json $OUT/decode-$v.json > /tmp/z/n/bench-$v.log 2>&1
  echo "bench $v rc=$? t=$SECONDS" | tee -a $S
done
# the rest of aheadbf's decode suite (bf16 forms), in the time left
[ $(left) -gt 40 ] && timeout $(( $(left) - 15 )) .gl/aheadbf35/mlakv_tests --gtest_filter="*CudaDecode*:-$F" > /tmp/z/n/tests-aheadbf-rest.log 2>&1
echo "rest tests rc=$? t=$SECONDS" | tee -a $S; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|\[ RUN|\[       OK" /tmp/z/n/tests-aheadbf-rest.log | tail -4 | tee -a $S
grep -c "\[       OK" /tmp/z/n/tests-aheadbf-rest.log | tee -a $S
tar czf $OUT/logs.tgz -C /tmp/z n
echo "end t=$SECONDS" | tee -a $S
