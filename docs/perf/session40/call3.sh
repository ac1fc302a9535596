#!/usr/bin/env bash
# Session 40, call 3: the other half of m40's decode suite (call2.sh ran the first), and memcheck
# on the merge and on a default path.
set -u
BUNDLE=${BUNDLE:-.gl/s40.txz} LIMIT=${LIMIT:-400}
. scripts/call-lib.sh
call_start $BUNDLE
call_tests .gl/m40/mlakv_tests $OUT/tests-m40-b.log \
  'CudaDecode*-CudaDecode.FusedSmallBatch:CudaDecode.Fp8SixteenAndThirtyTwoRowCtasMatchReference' $(( $(left) - 70 ))
call_memcheck .gl/m40/mlakv_tests 'CudaDecode.InGridMergeTakesAnyWorkspace:CudaDecode.FusedGraphReplayBackToBack:CudaDecode.ManyShortRequests' 60
call_end
