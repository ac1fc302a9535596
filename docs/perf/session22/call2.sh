#!/usr/bin/env bash
# session 22, call 2: several whole near-equal requests to a part (pad_requests, r = ceil(B/parts))
# against main's split (the same binary with MLAKV_DECODE_WHOLE=0, and main itself); fewer parts
# at B=1 H=128 (the combine's partials: 128 rows × 66 parts × 2 KB); the decode tests on the new
# schedule.
set -u
tar xzf .gl/b22a.tgz; tar xzf .gl/b22b.tgz; G=.gl; M=$G/m22main; W=$G/m22whole; mkdir -p $OUT /tmp/y
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
OUT=/tmp/y/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $M $W $W@MLAKV_DECODE_WHOLE=0 -- 'bf16 B=128 H=128 ctx=4096' 'bf16 B=128 H=128 ctx=1024' 'bf16 B=128 H=128 ctx=8192' 'fp8 B=128 H=128 ctx=4096' 'fp8_ds_mla B=128 H=128 ctx=4096' 'fp8 B=128 H=128 ctx=1024' 'bf16 B=128 H=16 ctx=4096' >/dev/null 2>&1
tail -9 /tmp/y/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
OUT=/tmp/y/ab1 ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $W $W@MLAKV_DECODE_PARTS=44 $W@MLAKV_DECODE_PARTS=33 $W@MLAKV_DECODE_PARTS=22 -- 'bf16 B=1 H=128 ctx=32768' 'fp8 B=1 H=128 ctx=32768' 'bf16 B=1 H=128 ctx=65536' 'bf16 B=8 H=128 ctx=8192' >/dev/null 2>&1
tail -6 /tmp/y/ab1/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
timeout 200 $W/mlakv_tests --gtest_filter='CudaDecode.NearEqualRequests*:CudaDecode.FormatsHeadsQueries:CudaDecode.ManyShortRequests:CudaDecode.FusedSmallBatch*:CudaDecode.BlockSizes:CudaDecode.DcpShards:CudaDecode.ReferenceVectors:CudaDecode.ClusteredPairsInACapturedGraph:CudaDecode.MaskedTokens*' > /tmp/y/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which is|FAILED  \]|tests ran|OK \]" /tmp/y/tests.log | head -40 | tee -a $OUT/summary.log
if (( SECONDS < 380 )); then
  timeout 120 compute-sanitizer --tool memcheck $W/mlakv_tests --gtest_filter='CudaDecode.NearEqualRequestsOnePartEach' > /tmp/y/memcheck.log 2>&1
  echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -3 /tmp/y/memcheck.log | tee -a $OUT/summary.log
fi
tar czf $OUT/extra.tgz -C /tmp/y .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
