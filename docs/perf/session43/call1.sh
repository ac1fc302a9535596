#!/usr/bin/env bash
# Session 43, call 1: the first half of session 42's call1.sh (never run, since deleted): on an H200 m's full bench,
# the small-step A/B and mo (bundle .gl/s48a.txz: m, mf, mo, trm; an H200 wanted); call2.sh has the
# merge diagnostics (md1..md3, mh1, mh2). m = main (the merge's walk by additions; the bench's
# backlog check, host_us; since e50013f the lazy validation messages); mf = 08dcee4 (the same kernels,
# the bench without the check, the eager validation); md1..md3 = m + session42/merge-diag.patch
# with -DMLAKV_DIAG_MERGE=1 (the merge does nothing), 2 (LSE loads only), 3 (o loads only): timing
# only, their outputs are wrong; trm = m's trace build; mh1 / mh2 = m + session41/l2-hints.patch with
# -DMLAKV_DECODE_L2_HINTS=1 (the partials stored with an L2 evict_last policy) / 2 (and the bf16 KV
# tiles' TMA copies with evict_first); mo = m + the kept partial (-DMLAKV_DECODE_MERGE_KEEP=1: the
# rows-as-M form's last partial stays in shared memory, its merger reads only the others'), with its tests.
#   1. Session 41's H200 full bench read bf16 B=1 H=16 1K / 8K and B=8 H=16 1K at 45.7 / 40.4 /
#      38.2 µs (session 31's H200: 15.0 / 18.8 / 18.7; the H100 15.1): m against mf (the bench
#      timing the host? its host_us says how long a step takes to enqueue), which switch removes
#      it, and a trace of the 1K step.
#   2. Where the merge's 8 µs (B=1 H=16 64K) and 18 µs (B=32 H=128 1K) go: md1..md3 against m,
#      all with MLAKV_DECODE_FUSED=merge; mh1 / mh2: whether the partials leave L2 before the merge
#      reads them; ncu source counters of m's merged steps.
set -u
BUNDLE=${BUNDLE:-.gl/s48a.txz} LIMIT=${LIMIT:-420}
. scripts/call-lib.sh
call_start $BUNDLE
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  timeout 60 .gl/m/mlakv bench decode --json $OUT/decode-h200.json > /tmp/z/n/bench-m.log 2>&1
  echo "bench m rc=$? t=$SECONDS" | tee -a "$S"
fi
if [ -z "${LEAN:-}" ]; then  # LEAN=1: no small A/B and trace (a short call)
  call_ab small .gl/mf .gl/m .gl/m@MLAKV_DECODE_FUSED=0 -- \
    'bf16 B=1 H=16 ctx=1024' 'bf16 B=1 H=16 ctx=8192' 'bf16 B=8 H=16 ctx=1024' 'fp8 B=1 H=16 ctx=1024'
  call_traces 'bf16 B=1 H=16 ctx=1024;bf16 B=8 H=16 ctx=1024' trm
fi
if [ -n "${MO:-}" ]; then  # MO=1: mo against m, its tests (session 43 ran LEAN=1 MO=1; mo lost, is gone from main)
  call_ab keepd .gl/m .gl/mo -- 'bf16 B=32 H=128 ctx=1024' 'fp8 B=32 H=128 ctx=8192' 'fp8_ds_mla B=32 H=128 ctx=1024' \
    'bf16 B=32 H=16 ctx=1024' 'bf16 B=32 H=128 ctx=65536'
  export MLAKV_DECODE_FUSED=merge
  call_ab keep .gl/m .gl/mo -- \
    'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=128 ctx=32768' 'bf16 B=32 H=128 ctx=1024' 'fp8 B=32 H=128 ctx=8192' 'bf16 B=8 H=128 ctx=1024' 'bf16 B=128 H=16 ctx=4096'
  call_tests .gl/mo/mlakv_tests $OUT/tests-mo-merge.log \
    'CudaDecode.Fused*:CudaDecode.InGridMerge*:CudaDecode.StepsInARow*:CudaDecode.Graph*:CudaDecode.OneNan*:CudaDecode.ClusteredPairsInACapturedGraph:Forms/CudaDecodeForm.*' $(( $(left) - 60 ))
  call_memcheck .gl/mo/mlakv_tests 'CudaDecode.InGridMerge*:CudaDecode.FusedGraphReplayBackToBack' 25
  unset MLAKV_DECODE_FUSED
  call_tests .gl/mo/mlakv_tests $OUT/tests-mo.log 'CudaDecode.InGridMerge*:CudaDecode.Fused*' $(( $(left) - 5 ))
fi
call_end
