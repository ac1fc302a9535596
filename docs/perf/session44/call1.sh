#!/usr/bin/env bash
# Session 44, call 1: session 43's call1.sh and call2.sh in one call (one machine start; bundle
# .gl/s48.txz: m, mf, mo, trm, md1..md3, mh1, mh2, all but mf built on main ed53e6b; the
# variants are described in session43/call1.sh and call2.sh).
#   On an H200: m's full bench (-> decode-h200.json), the small-step A/B of mf, m and m without the
#   fused path, and a trace of the small steps (session 41's H200 read them 2-3x slow).
#   On either card: where the in-grid merge's time goes (md1..md3, mh1, mh2 against m, the merge
#   forced), then ncu source counters of m's merged steps while time is left.
set -u
BUNDLE=${BUNDLE:-.gl/s48.txz} LIMIT=${LIMIT:-480}
. scripts/call-lib.sh
call_start $BUNDLE
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  timeout 90 .gl/m/mlakv bench decode --json $OUT/decode-h200.json > /tmp/z/n/bench-m.log 2>&1
  echo "bench m rc=$? t=$SECONDS" | tee -a "$S"
  call_ab small .gl/mf .gl/m .gl/m@MLAKV_DECODE_FUSED=0 -- \
    'bf16 B=1 H=16 ctx=1024' 'bf16 B=1 H=16 ctx=8192' 'bf16 B=8 H=16 ctx=1024' 'fp8 B=1 H=16 ctx=1024'
  call_traces 'bf16 B=1 H=16 ctx=1024;bf16 B=8 H=16 ctx=1024' trm
fi
export MLAKV_DECODE_FUSED=merge
call_ab diag .gl/m .gl/md1 .gl/md2 .gl/md3 .gl/mh1 .gl/mh2 -- \
  'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=128 ctx=32768' 'bf16 B=32 H=128 ctx=1024' 'fp8 B=32 H=128 ctx=8192' \
  'bf16 B=8 H=128 ctx=1024' 'bf16 B=128 H=16 ctx=4096'
call_ncu .gl/m/mlakv 'bf16 B=1 H=16 ctx=65536' 'bf16 B=32 H=128 ctx=1024'
call_end
