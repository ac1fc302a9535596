#!/usr/bin/env bash
# session 28, call 2 (never ran: every start was refused; call 3 is its cut): why the rs32 form fails at 32 rows (call 1: every 32-row case non-finite):
# per-row lse / out of both fp8 forms at 32 rows (r28a = rs32 + a debug test). p28 = r28a + the
# raw stage at a 640-byte token pitch (rs_chunk): its fp8 tests at the default forms (16 rows:
# register operands; 32: widened), an A/B against main (m27f) at 16 rows. ncu stall reasons and
# bank conflicts of main's 16-row tile. On an H200 also main's full bench decode.
set -u
LIMIT=${LIMIT:-400}
tar xzf .gl/b28b.tgz; F=.gl/m27f-cli; R=.gl/r28a; P=.gl/p28; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
timeout 60 $R/mlakv_tests --gtest_filter='CudaDecodeDebug.*' > $OUT/debug.log 2>&1
echo "debug rc=$? t=$SECONDS" | tee -a $OUT/summary.log
timeout 120 $P/mlakv_tests --gtest_filter='CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference:CudaDecode.FormatsHeadsQueries:*OneNan*:*Fp8QueriesWithOutlier*:*MaskedTokensNever*:*LockStepManyRequestsPerPart' > $OUT/tests-p28.log 2>&1
echo "p28 tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]" $OUT/tests-p28.log | cut -c1-100 | tail -8 | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=40 scripts/ab-decode.sh $F $P -- 'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' >/dev/null 2>&1
cp /tmp/z/ab/ab.log $OUT/ 2>/dev/null; tail -5 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "ab t=$SECONDS" | tee -a $OUT/summary.log
for v in $F $P; do
  timeout 40 ncu -k regex:mla_decode_sm90_kernel --launch-skip 5 --launch-count 1 \
    --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum' \
    $v/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' --iters 3 > $OUT/ncu-$(basename $v).txt 2>&1
  echo "ncu $v rc=$? t=$SECONDS" | tee -a $OUT/summary.log
done
if nvidia-smi --query-gpu=name --format=csv | grep -q H200; then
  left=$((LIMIT - SECONDS)); [ $left -gt 60 ] && timeout $left $F/mlakv bench decode --json $OUT/decode-h200.json > $OUT/bench-h200.log 2>&1
  echo "bench rc=$? t=$SECONDS" | tee -a $OUT/summary.log
fi
