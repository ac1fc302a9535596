#!/usr/bin/env bash
# session 28, call 3: call 2 cut to the last device minutes, most wanted first: the rs32 debug rows,
# one A/B round of the 640-byte pitch (p28) against main at 16 rows, p28's fp8 tests, ncu stall
# reasons and bank conflicts of both builds, each only while time is left.
set -u
LIMIT=${LIMIT:-200}
tar xzf .gl/b28b.tgz; F=.gl/m27f-cli; R=.gl/r28a; P=.gl/p28; mkdir -p $OUT /tmp/z
left() { echo $((LIMIT - SECONDS)); }
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 45 $R/mlakv_tests --gtest_filter='CudaDecodeDebug.*' > $OUT/debug.log 2>&1
echo "debug rc=$? t=$SECONDS" | tee -a $OUT/summary.log
[ $(left) -gt 40 ] && OUT=/tmp/z/ab ROUNDS=1 AB_TIMEOUT=30 scripts/ab-decode.sh $F $P -- 'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ 2>/dev/null; tail -4 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "ab t=$SECONDS" | tee -a $OUT/summary.log
[ $(left) -gt 30 ] && timeout $(( $(left) - 25 )) $P/mlakv_tests --gtest_filter='CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference:*OneNan*:*MaskedTokensNever*' > $OUT/tests-p28.log 2>&1
echo "p28 tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|^\[       OK" $OUT/tests-p28.log | cut -c1-100 | tail -8 | tee -a $OUT/summary.log
[ $(left) -gt 15 ] && timeout $(left) ncu -k regex:mla_decode_sm90_kernel --launch-skip 5 --launch-count 1 \
  --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum' \
  $F/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' --iters 3 > $OUT/ncu-m27f.txt 2>&1
echo "ncu rc=$? t=$SECONDS" | tee -a $OUT/summary.log
