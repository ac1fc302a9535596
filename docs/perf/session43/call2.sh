#!/usr/bin/env bash
# Session 43, call 2: the second half of session 42's call1.sh (bundle .gl/s48b.txz: m, md1..md3, mh1,
# mh2, built on main ed53e6b): where the in-grid merge's 8 µs (B=1 H=16 64K) and 18 µs (B=32 H=128
# 1K) go. md1..md3 = m + session42/merge-diag.patch with -DMLAKV_DIAG_MERGE=1 (the merge does
# nothing), 2 (LSE loads only), 3 (o loads only): timing only, their outputs are wrong; mh1 / mh2 =
# m + session41/l2-hints.patch with -DMLAKV_DECODE_L2_HINTS=1 (the partials stored with an L2
# evict_last policy) / 2 (and the bf16 KV tiles' TMA copies with evict_first); all with
# MLAKV_DECODE_FUSED=merge; then ncu source counters of m's merged steps.
set -u
BUNDLE=${BUNDLE:-.gl/s48b.txz} LIMIT=${LIMIT:-500}
. scripts/call-lib.sh
call_start $BUNDLE
export MLAKV_DECODE_FUSED=merge
call_ab diag .gl/m .gl/md1 .gl/md2 .gl/md3 .gl/mh1 .gl/mh2 -- \
  'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=128 ctx=32768' 'bf16 B=32 H=128 ctx=1024' 'fp8 B=32 H=128 ctx=8192' 'bf16 B=8 H=128 ctx=1024' 'bf16 B=128 H=16 ctx=4096'
call_ncu .gl/m/mlakv 'bf16 B=1 H=16 ctx=65536' 'bf16 B=32 H=128 ctx=1024'
call_end
