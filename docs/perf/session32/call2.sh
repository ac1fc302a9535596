#!/usr/bin/env bash
# session 32, call 2: bundle .gl/b32b.tgz (packed with -C .gl: m32/ lz/), as in call 1 —
#   m32 = main; lz = lazy rescaling (-DMLAKV_DECODE_LAZY=1).
# The A/B of lz against m32 on the 16-row and 32-row fp8 shapes, lz under racecheck, then the
# whole decode suite on lz, each in the time left.
set -u
LIMIT=${LIMIT:-560}
tar xzf .gl/b32b.tgz -C .gl; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
S=$OUT/summary.log
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv | tee $S
cmp -s .gl/m32/mlakv .gl/lz/mlakv && echo "ERROR: lz is m32" | tee -a $S
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m32 .gl/lz -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=32 H=16 ctx=8192' \
  'fp8 B=8 H=16 ctx=1024' 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' \
  'fp8_ds_mla B=1 H=16 ctx=65536' 'fp8 B=64 H=32 ctx=32768' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -11 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
timeout 30 compute-sanitizer --tool racecheck .gl/lz/mlakv bench decode --iters 1 --only 'fp8 B=8 H=16 ctx=1024' --only 'fp8_ds_mla B=8 H=16 ctx=1024' --only 'fp8 B=8 H=32 ctx=1024' > $OUT/racecheck.log 2>&1
echo "racecheck rc=$? t=$SECONDS" | tee -a $S; tail -1 $OUT/racecheck.log | tee -a $S
[ $(left) -gt 60 ] && timeout $(( $(left) - 10 )) .gl/lz/mlakv_tests --gtest_filter='CudaDecode*:Forms/CudaDecode*' > $OUT/suite-lz.log 2>&1
echo "suite rc=$? t=$SECONDS" | tee -a $S; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|Expected|Which is" $OUT/suite-lz.log | cut -c1-160 | tail -8 | tee -a $S
grep -c "^\[       OK" $OUT/suite-lz.log | tee -a $S
echo "end t=$SECONDS" | tee -a $S
