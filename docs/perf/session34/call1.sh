#!/usr/bin/env bash
# session 34, call 1: bundle .gl/b34.tgz (-C .gl: m34/ = main 9876310, lazy rescaling on;
# prod/ = docs/perf/session34/producer.patch: the register-operand producer's lookups once a tile
# and its chunks from one base address; unif/ = prod + the warpgroup index broadcast from lane 0,
# so that the P·V descriptors stay in uniform registers).
# The full `bench decode` of main on this card, the A/B of prod on the FP8 shapes, prod's tests
# (block sizes, bad block ids, forms, NaN, DCP), ncu (memory tables + source counters, source page
# exported for scripts/sass_stalls.py --per) on the 16-row FP8 tile of both builds, then memcheck.
set -u
LIMIT=${LIMIT:-570}
tar xzf .gl/b34.tgz -C .gl; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
S=$OUT/summary.log
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv | tee $S
for v in prod unif; do cmp -s .gl/m34/mlakv .gl/$v/mlakv && echo "ERROR: $v is m34" | tee -a $S; done
timeout 120 .gl/m34/mlakv bench decode --json $OUT/decode.json > $OUT/bench.log 2>&1
echo "bench rc=$? t=$SECONDS" | tee -a $S; grep -E "copy ceiling|B=128 H=16 ctx=4096|B=64 H=32" $OUT/bench.log | head -8 | tee -a $S
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m34 .gl/prod .gl/unif -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=32 H=16 ctx=8192' \
  'fp8 B=8 H=16 ctx=1024' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8 B=64 H=32 ctx=32768' 'fp8 B=128 H=128 ctx=4096' 'bf16 B=128 H=16 ctx=4096' 'bf16 B=1 H=128 ctx=32768' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -13 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
F='CudaDecode.BlockSizes:CudaDecode.BadBlockIds*:Forms/CudaDecodeFp8Form.*:CudaDecode.Fp8*:CudaDecode.DcpShards:CudaDecode.OneNan*:CudaDecode.MaskedTokens*:CudaDecode.LongContextOneRequest:CudaDecode.ReferenceVectors:CudaDecode.ManyShortRequests:CudaDecode.DsMlaSm90Forms:CudaDecode.FormatsHeadsQueries'
timeout 150 .gl/unif/mlakv_tests --gtest_filter="$F" > $OUT/tests-prod.log 2>&1
echo "unif tests rc=$? t=$SECONDS" | tee -a $S
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Expected|Which is" $OUT/tests-prod.log | cut -c1-160 | head -12 | tee -a $S
prof() {  # prof BUILD NAME 'only text'
  [ $(left) -gt 80 ] || { echo "skip ncu $2" | tee -a $S; return; }
  timeout 120 ncu -k regex:mla_decode_sm90 --launch-skip 5 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
    --section InstructionStats --section ComputeWorkloadAnalysis \
    --section WarpStateStats --section SchedulerStats --section SourceCounters \
    -o /tmp/z/$2 .gl/$1/mlakv bench decode --iters 3 --only "$3" > /tmp/z/$2.log 2>&1
  echo "ncu $2 rc=$? t=$SECONDS" | tee -a $S
  mkdir -p /tmp/z/n
  ncu --import /tmp/z/$2.ncu-rep --print-details all > /tmp/z/n/ncu-$2.txt 2>&1
  ncu --import /tmp/z/$2.ncu-rep --page source --csv --print-source sass 2>/dev/null | gzip > /tmp/z/n/sass-$2.csv.gz
  tar czf $OUT/ncu.tgz -C /tmp/z n  # the device tool brings back 8 files: the profiles travel as one
}
prof m34 fp8 'fp8 B=128 H=16 ctx=4096'
prof unif fp8unif 'fp8 B=128 H=16 ctx=4096'
[ $(left) -gt 50 ] && timeout 60 compute-sanitizer --tool memcheck .gl/unif/mlakv_tests --gtest_filter='CudaDecode.BlockSizes:CudaDecode.BadBlockIds*' > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -3 $OUT/memcheck.log | tee -a $S
prof m34 bf16 'bf16 B=128 H=16 ctx=4096'
echo "end t=$SECONDS" | tee -a $S
