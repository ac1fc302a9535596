#!/usr/bin/env bash
# session 28, call 4 (not run: too little device time left; the next session's first call).
#   r28c = branch rs32-next 98aafcb: main + the register-operand form at 32 rows (opt-in
#          MLAKV_DECODE_FP8_FORM=rs) with its Q-tile fix;
#   pf28 = branch prefetch 5361c4e: r28c + raw K / Vᵀ reads a step ahead at 16 rows (kPre);
#   m27f-cli = main.
# Both builds' form tests with the register-operand form at 16 and 32 rows, then A/B rounds:
# 32 rows (main widened vs both @rs), 16 rows (main vs pf28).
set -u
LIMIT=${LIMIT:-400}
tar xzf .gl/b28c.tgz; F=.gl/m27f-cli; C=.gl/r28c; P=.gl/pf28; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
for v in $C $P; do
  n=$(basename $v)
  timeout 75 $v/mlakv_tests --gtest_filter='Forms/CudaDecodeFp8Form.*/rs' > $OUT/tests-$n.log 2>&1
  echo "$n form test rc=$? t=$SECONDS" | tee -a $OUT/summary.log
  grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" $OUT/tests-$n.log | cut -c1-100 | tail -4 | tee -a $OUT/summary.log
done
[ $(left) -gt 60 ] && OUT=/tmp/z/ab32 ROUNDS=2 AB_TIMEOUT=30 scripts/ab-decode.sh $F $C@MLAKV_DECODE_FP8_FORM=rs $P@MLAKV_DECODE_FP8_FORM=rs -- 'fp8 B=64 H=32 ctx=32768' 'fp8 B=8 H=32 ctx=65536' >/dev/null 2>&1
cp /tmp/z/ab32/ab.log $OUT/ab32.log 2>/dev/null; tail -4 /tmp/z/ab32/ab.log | tee -a $OUT/summary.log; echo "ab32 t=$SECONDS" | tee -a $OUT/summary.log
[ $(left) -gt 40 ] && OUT=/tmp/z/ab16 ROUNDS=2 AB_TIMEOUT=30 scripts/ab-decode.sh $F $P -- 'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' >/dev/null 2>&1
cp /tmp/z/ab16/ab.log $OUT/ab16.log 2>/dev/null; tail -5 /tmp/z/ab16/ab.log | tee -a $OUT/summary.log; echo "ab16 t=$SECONDS" | tee -a $OUT/summary.log
[ $(left) -gt 20 ] && timeout $(left) ncu -k regex:mla_decode_sm90_kernel --launch-skip 5 --launch-count 1 \
  --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
  $P/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' --iters 3 > $OUT/ncu-pf28.txt 2>&1
echo "ncu rc=$? t=$SECONDS" | tee -a $OUT/summary.log
