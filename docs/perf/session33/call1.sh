#!/usr/bin/env bash
# session 33, call 1: bundle .gl/b33.tgz (packed with -C .gl: m33/ lz/ wg3b/ wg3blz/) —
#   m33 = main (3df8279); lz = -DMLAKV_DECODE_LAZY=1; wg3b = docs/perf/session32/wg3b.patch with
#   -DMLAKV_DECODE_WG3=2 -DMLAKV_DECODE_WG3_PRODUCER=24 -DMLAKV_DECODE_WG3_CONSUMER=160 (no C7512);
#   wg3blz = both.
# wg3b under racecheck (session 32's hand-over hazards) and its form / NaN tests first, then the
# A/B over the 16- and 32-row FP8 shapes, lz's tests that session 32 did not reach, ncu on m33 and wg3b (fp8 B=128 H=16 4K), wg3b under
# memcheck and the rest of its decode suite, each in the time left.
set -u
LIMIT=${LIMIT:-570}
tar xzf .gl/b33.tgz -C .gl; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
S=$OUT/summary.log
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv | tee $S
for v in lz wg3b wg3blz; do cmp -s .gl/m33/mlakv .gl/$v/mlakv && echo "ERROR: $v is m33" | tee -a $S; done
timeout 60 compute-sanitizer --tool racecheck .gl/wg3b/mlakv bench decode --iters 1 --only 'fp8 B=8 H=16 ctx=1024' --only 'fp8_ds_mla B=8 H=16 ctx=1024' > $OUT/racecheck.log 2>&1
echo "racecheck rc=$? t=$SECONDS" | tee -a $S; grep -E "hazard|RACECHECK SUMMARY" $OUT/racecheck.log | sort | uniq -c | head -6 | cut -c1-200 | tee -a $S
F='Forms/CudaDecodeFp8Form.*:CudaDecode.OneNan*:CudaDecode.MaskedTokens*:CudaDecode.Fp8*:CudaDecode.FusedSmallBatch:CudaDecode.ManyShortRequests'
timeout 120 .gl/wg3b/mlakv_tests --gtest_filter="$F" > $OUT/tests-wg3b.log 2>&1
echo "wg3b tests rc=$? t=$SECONDS" | tee -a $S
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Expected|Which is|case:" $OUT/tests-wg3b.log | cut -c1-160 | head -12 | tee -a $S
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m33 .gl/lz .gl/wg3b .gl/wg3blz -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=32 H=16 ctx=8192' \
  'fp8 B=8 H=16 ctx=1024' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8_ds_mla B=1 H=16 ctx=65536' 'fp8 B=64 H=32 ctx=32768' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -11 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
L='Forms/CudaDecodeFp8Form.DsMla*/rs:CudaDecode.Fp8SixteenAndThirtyTwo*:CudaDecode.Fp8Queries*:CudaDecode.Fp8DsMla*:CudaDecode.FormatsHeadsQueries:CudaDecode.DsMlaSm90Forms:CudaDecode.ReferenceVectors:CudaDecode.LongContextOneRequest:CudaDecode.DcpShards:CudaDecode.QueryE4m3*'
[ $(left) -gt 60 ] && timeout 100 .gl/lz/mlakv_tests --gtest_filter="$L" > $OUT/tests-lz.log 2>&1
echo "lz tests rc=$? t=$SECONDS" | tee -a $S; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Expected|Which is" $OUT/tests-lz.log | cut -c1-160 | tail -8 | tee -a $S
for v in m33 wg3b; do
  [ $(left) -gt 120 ] && CLI=.gl/$v/mlakv OUT=$OUT REPORT=$OUT/ncu-$v.txt STEP_TIMEOUT=60 SECTIONS="SpeedOfLight WarpStateStats SchedulerStats ComputeWorkloadAnalysis" \
    scripts/ncu-cases.sh 'decode|mla_decode_sm90|fp8 B=128 H=16 ctx=4096'
  echo "ncu $v t=$SECONDS" | tee -a $S
done
[ $(left) -gt 60 ] && timeout 90 compute-sanitizer --tool memcheck .gl/wg3b/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs:CudaDecode.OneNan*' > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $S; tail -3 $OUT/memcheck.log | tee -a $S
[ $(left) -gt 40 ] && timeout $(( $(left) - 10 )) .gl/wg3b/mlakv_tests --gtest_filter="CudaDecode*:-$F" > $OUT/suite-wg3b.log 2>&1
echo "suite rc=$? t=$SECONDS" | tee -a $S; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|\[ RUN" $OUT/suite-wg3b.log | tail -4 | tee -a $S
echo "end t=$SECONDS" | tee -a $S
