#!/usr/bin/env bash
# session 31, call 5 (an H100): bundle .gl/b31p.tgz as call 3. The A/B of main (m31) against the
# read-ahead (p, now the default) on the shapes it moves, then p's full bench (docs/perf/decode.json).
set -u
tar xzf .gl/b31p.tgz -C .gl; mkdir -p $OUT /tmp/z
S=$OUT/summary.log
nvidia-smi --query-gpu=name --format=csv | tee $S
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh .gl/m31 .gl/p -- \
  'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=1 H=16 ctx=65536' 'fp8 B=32 H=16 ctx=8192' \
  'fp8_ds_mla B=128 H=16 ctx=4096' 'fp8_ds_mla B=64 H=16 ctx=16384' 'fp8_ds_mla B=1 H=16 ctx=65536' \
  'fp8_ds_mla B=128 H=16 ctx=8192' 'fp8 B=64 H=32 ctx=32768' 'fp8 B=8 H=32 ctx=65536' >/dev/null 2>&1
cp /tmp/z/ab/ab.log /tmp/z/ab/ab.json $OUT/ 2>/dev/null; tail -12 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
timeout 150 .gl/p/mlakv bench decode --json $OUT/decode-p.json > $OUT/bench-p.log 2>&1
echo "bench p rc=$? t=$SECONDS" | tee -a $S; sed -n 1,20p $OUT/bench-p.log | tee -a $S
