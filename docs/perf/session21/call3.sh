#!/usr/bin/env bash
# session 21, call 3: the 16-row fp8 producer without its proxy fence before the stage's arrival
# (the MEMBAR.ALL.CTA it compiles to may wait for the loads in flight): m21nfp (main's ring, no
# producer fence; every ring form), m21r1 (registers only, loads after the arrival), m21r2 (half
# ring, half registers) against main; then every decode test and memcheck on the fastest.
set -u
tar xzf .gl/b21d.tgz; G=.gl; M=$G/m20main; mkdir -p $OUT /tmp/y
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
OUT=/tmp/y/ab ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $M $G/m21nfp $G/m21r1 $G/m21r2 -- 'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8 B=64 H=32 ctx=32768' 'fp8 B=128 H=128 ctx=4096' 'fp8_ds_mla B=128 H=128 ctx=4096' >/dev/null 2>&1
tail -11 /tmp/y/ab/ab.log | tee -a $OUT/summary.log
best=$(awk -F'|' '/fp8 B=128 H=16 ctx=4096/ { b = "m21nfp"; m = $4 + 0; if ($5 + 0 < m) { b = "m21r1"; m = $5 + 0 } if ($6 + 0 < m) { b = "m21r2" } print b }' /tmp/y/ab/ab.log | tail -1)
echo "best=$best t=$SECONDS" | tee -a $OUT/summary.log
timeout 180 $G/$best/mlakv_tests --gtest_filter='CudaDecode.FormatsHeadsQueries:CudaDecode.Fp8*:CudaDecode.DsMlaSm90Forms:CudaDecode.BlockSizes:CudaDecode.ManyShortRequests:CudaDecode.BadBlockIdsAreMaskedNotRead:CudaDecode.MaskedTokens*:CudaDecode.ReferenceVectors:CudaDecode.QueryE4m3OutF32StridedNonCausal:CudaDecode.DcpShards:CudaDecode.NearEqualRequestsOnePartEach:CudaDecode.ClusteredPairs*' > /tmp/y/tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which is|FAILED  \]|tests ran" /tmp/y/tests.log | head -30 | tee -a $OUT/summary.log
win=$(awk -F'|' '/fp8 B=128 H=16 ctx=4096/ { m = $4 + 0; if ($5 + 0 < m) m = $5 + 0; if ($6 + 0 < m) m = $6 + 0; print (m < 0.95 * ($3 + 0)) ? 1 : 0 }' /tmp/y/ab/ab.log | tail -1)
echo "win=$win" | tee -a $OUT/summary.log
if [[ "$win" == 1 ]] && grep -q "^\[  PASSED  \]" /tmp/y/tests.log && ! grep -q FAILED /tmp/y/tests.log && (( SECONDS < 230 )); then
  timeout 85 $G/$best/mlakv bench decode --json $OUT/decode.json > $OUT/bench-decode.txt 2>&1; echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log
fi
if (( SECONDS < 290 )); then
  timeout 60 compute-sanitizer --tool memcheck $G/$best/mlakv_tests --gtest_filter='CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference' > /tmp/y/memcheck.log 2>&1
  echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -3 /tmp/y/memcheck.log | tee -a $OUT/summary.log
fi
tar czf $OUT/extra.tgz -C /tmp/y .
