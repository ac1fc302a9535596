#!/usr/bin/env bash
# session 34, call 2: bundle .gl/b34b.tgz (-C .gl: m34/ = main 9876310; unif/ = unif.patch (the
# producer's lookups once a tile, chunks from one base, the warpgroup index broadcast so that the
# P·V descriptors stay uniform); ahead/ = ahead.patch (unif + the lookups a tile ahead, their reads
# kept out of uniform registers)). A/B (3 rounds), ahead's tests and memcheck, ncu on ahead.
# Not run in session 34 (no device time left). For session 35: BUNDLE, and the three folder names
# A (base), U, H (e.g. BUNDLE=.gl/b35.tgz A=m35 U=unif35 H=ahead35), built per decode-notes' plan.
set -u
BUNDLE=${BUNDLE:-.gl/b34b.tgz} A=${A:-m34} U=${U:-unif} H=${H:-ahead}
LIMIT=${LIMIT:-560}
tar xzf $BUNDLE -C .gl; mkdir -p $OUT /tmp/z/n
left() { echo $((LIMIT - SECONDS)); }
S=$OUT/summary.log
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv | tee $S
for v in $U $H; do cmp -s .gl/$A/mlakv .gl/$v/mlakv && echo "ERROR: $v is $A" | tee -a $S; done
OUT=/tmp/z/ab ROUNDS=3 AB_TIMEOUT=60 scripts/ab-decode.sh .gl/$A .gl/$U .gl/$H -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=32 H=16 ctx=8192' \
  'fp8 B=8 H=16 ctx=1024' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8 B=64 H=32 ctx=32768' 'fp8 B=128 H=128 ctx=4096' 'bf16 B=128 H=16 ctx=4096' 'bf16 B=1 H=128 ctx=32768' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -13 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
F='Forms/CudaDecodeFp8Form.DsMla*/rs:CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:Forms/CudaDecodeFp8Form.SixteenAndThirtyTwo*/rs:CudaDecode.OneNan*:CudaDecode.DcpShards:CudaDecode.ManyShortRequests:CudaDecode.DsMlaSm90Forms:CudaDecode.FusedSmallBatch:CudaDecode.GraphCaptureFollowsDeviceLengths:CudaDecode.LongContextOneRequest'
timeout 200 .gl/$H/mlakv_tests --gtest_filter="$F" > $OUT/tests-ahead.log 2>&1
echo "ahead tests rc=$? t=$SECONDS" | tee -a $S
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Expected|Which is" $OUT/tests-ahead.log | cut -c1-160 | head -12 | tee -a $S
[ $(left) -gt 60 ] && timeout 60 compute-sanitizer --tool memcheck .gl/$H/mlakv_tests --gtest_filter='CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:CudaDecode.DcpShards' > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -3 $OUT/memcheck.log | tee -a $S
[ $(left) -gt 100 ] && timeout 60 .gl/$H/mlakv bench decode --json $OUT/decode-ahead.json > $OUT/bench-ahead.log 2>&1
echo "bench ahead rc=$? t=$SECONDS" | tee -a $S
if [ $(left) -gt 60 ]; then
  timeout 60 ncu -k regex:mla_decode_sm90 --launch-skip 5 --launch-count 1 --section SpeedOfLight \
    --section WarpStateStats --section SchedulerStats --section SourceCounters \
    -o /tmp/z/ahead .gl/$H/mlakv bench decode --iters 3 --only 'fp8 B=128 H=16 ctx=4096' > /tmp/z/ncu.log 2>&1
  echo "ncu rc=$? t=$SECONDS" | tee -a $S
  mkdir -p /tmp/z/n
  ncu --import /tmp/z/ahead.ncu-rep --print-details all > /tmp/z/n/ncu-ahead.txt 2>&1
  ncu --import /tmp/z/ahead.ncu-rep --page source --csv --print-source sass 2>/dev/null | gzip > /tmp/z/n/sass-ahead.csv.gz
  tar czf $OUT/ncu.tgz -C /tmp/z n
fi
# The base's own decode suite (main's broadcast had not run on a GPU when it landed), in the time left.
[ $(left) -gt 40 ] && timeout $(( $(left) - 15 )) .gl/$A/mlakv_tests --gtest_filter='*CudaDecode*' > /tmp/z/n/tests-base.log 2>&1
echo "base tests rc=$? t=$SECONDS" | tee -a $S; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|\[ RUN" /tmp/z/n/tests-base.log | tail -4 | tee -a $S
tar czf $OUT/ncu.tgz -C /tmp/z n
echo "end t=$SECONDS" | tee -a $S
