#!/usr/bin/env bash
# session 25, call 5: where a small step's time goes after the attention grid — combine CTAs'
# stamps at B=1 and B=8, and the combine's column slices z against the default.
set -u
tar xzf .gl/b25e.tgz; N=.gl/m25e; TR=.gl/m25etrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
d=/tmp/z/tr; MLAKV_TRACE_DIR=$d timeout 90 $TR/mlakv bench decode --only 'bf16 B=1 H=16 ctx=1024' --only 'bf16 B=1 H=16 ctx=65536' \
  --only 'bf16 B=8 H=16 ctx=8192' --only 'bf16 B=1 H=128 ctx=32768' --only 'fp8 B=1 H=16 ctx=65536' --iters 20 > $d/trace.log 2>&1
echo "trace rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep mla_decode $d/trace.log | tee -a $OUT/summary.log
for f in $d/*.bin; do python3 scripts/decode_trace.py "$f" 2>&1 | grep -v "^   k=" | head -40; done > $OUT/trace.txt 2>&1
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $N $N@MLAKV_DECODE_COMBINE_Z=4 $N@MLAKV_DECODE_COMBINE_Z=8 $N@MLAKV_DECODE_COMBINE_Z=32 $N@MLAKV_DECODE_FUSED=merge -- \
  'bf16 B=1 H=16 ctx=1024' 'bf16 B=1 H=16 ctx=65536' 'bf16 B=8 H=16 ctx=8192' 'bf16 B=1 H=128 ctx=32768' >/dev/null 2>&1
tail -8 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
