#!/usr/bin/env bash
# session 29, call 1: session 28's call 4 (never run) plus what it gated, in one call.
#   r28c = branch rs32-next 98aafcb (register-operand fp8 form at 32 rows, opt-in
#          MLAKV_DECODE_FP8_FORM=rs, with the Q-tile fix); pf28 = branch prefetch 5361c4e
#          (r28c + raw K / Vᵀ reads one step ahead at 16 rows; its 32-row kernel is r28c's);
#   m27f-cli = main.
# Form tests of both, one A/B (32-row cases: main widened vs both @rs; 16-row cases: main vs
# pf28), then the whole decode suite with the form on (pf28), racecheck, memcheck, ncu stalls.
set -u
LIMIT=${LIMIT:-560}
tar xzf .gl/b28c.tgz; F=.gl/m27f-cli; C=.gl/r28c; P=.gl/pf28; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
for v in $P $C; do
  n=$(basename $v)
  timeout 75 $v/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs' > $OUT/tests-$n.log 2>&1
  echo "$n form test rc=$? t=$SECONDS" | tee -a $OUT/summary.log
  grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" $OUT/tests-$n.log | cut -c1-100 | tail -4 | tee -a $OUT/summary.log
done
[ $(left) -gt 60 ] && OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=30 scripts/ab-decode.sh $F $C@MLAKV_DECODE_FP8_FORM=rs $P@MLAKV_DECODE_FP8_FORM=rs -- \
  'fp8 B=64 H=32 ctx=32768' 'fp8 B=8 H=32 ctx=65536' 'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ab.log 2>/dev/null; tail -7 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "ab t=$SECONDS" | tee -a $OUT/summary.log
t=$(( $(left) - 90 )); [ $t -gt 280 ] && t=280
[ $t -gt 60 ] && MLAKV_DECODE_FP8_FORM=rs timeout $t $P/mlakv_tests --gtest_filter='CudaDecode.*:DecodeSplit.*:Forms/*' > $OUT/suite-pf28-rs.log 2>&1
echo "suite rc=$? t=$SECONDS" | tee -a $OUT/summary.log
grep -E "^\[  (PASSED|FAILED) |FAILED  \]" $OUT/suite-pf28-rs.log | cut -c1-120 | tail -8 | tee -a $OUT/summary.log
[ $(left) -gt 40 ] && timeout 40 compute-sanitizer --tool racecheck env MLAKV_DECODE_FP8_FORM=rs $P/mlakv bench decode --iters 1 --only 'fp8 B=8 H=32 ctx=1024' --only 'fp8 B=8 H=16 ctx=1024' > $OUT/racecheck.log 2>&1
echo "racecheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -3 $OUT/racecheck.log | tee -a $OUT/summary.log
[ $(left) -gt 50 ] && MLAKV_DECODE_FP8_FORM=rs timeout $(( $(left) - 20 )) compute-sanitizer --tool memcheck $P/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs' > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -3 $OUT/memcheck.log | tee -a $OUT/summary.log
[ $(left) -gt 15 ] && timeout $(left) ncu -k regex:mla_decode_sm90_kernel --launch-skip 5 --launch-count 1 \
  --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
  $P/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' --iters 3 > $OUT/ncu-pf28.txt 2>&1
echo "ncu rc=$? t=$SECONDS" | tee -a $OUT/summary.log
