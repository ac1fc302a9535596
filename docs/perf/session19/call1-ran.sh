#!/usr/bin/env bash
# session 19, call 1 (untracked; removed after the session)
set -u
tar xzf .gl/b19a.tgz
G=.gl
mkdir -p $OUT
( OUT=/tmp/ab1 ROUNDS=2 scripts/ab-decode.sh $G/m19main $G/m19ds16 -- 'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=32 ctx=32768' >/dev/null 2>&1
  OUT=/tmp/ab3 ROUNDS=2 scripts/ab-decode.sh $G/m19ds16 $G/m19early $G/m19nowiden -- 'fp8 B=128 H=16 ctx=4096' >/dev/null 2>&1
  for d in ab1 ab3; do tail -4 /tmp/$d/ab.log; done; tar czf $OUT/ab.tgz -C /tmp ab1 ab3 )
PREBUILT=$G/m19early GTEST_FILTER='*CudaDecode*:*CudaMerge*' TEST_TIMEOUT=170 SANITIZE_TOOLS=memcheck \
  SANITIZE_FILTER='CudaDecode.DsMlaSm90Forms:CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference' STEP_TIMEOUT=70 BENCH=0 PYTHON=0 FP8_CHECK=0 \
  scripts/gpu-check.sh 2>&1 | grep -v "^|" | tail -30
