#!/usr/bin/env bash
# session 25, call 6: is the combine's first item slow because it is the first (cold code, TLB)?
# Stamps of each CTA's first and second items, with z set so that CTAs take several items.
set -u
tar xzf .gl/b25f.tgz; TR=.gl/m25ftrace; mkdir -p $OUT /tmp/z
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
for spec in "16:bf16 B=1 H=128 ctx=32768" "4:bf16 B=1 H=128 ctx=32768" "64:bf16 B=1 H=16 ctx=65536" "64:bf16 B=1 H=16 ctx=1024" "16:bf16 B=1 H=16 ctx=1024"; do
  z=${spec%%:*}; c=${spec#*:}; d=/tmp/z/z$z-$(echo "$c" | tr -d ' =' ); mkdir -p $d
  MLAKV_DECODE_COMBINE_Z=$z MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only "$c" --iters 20 > $d/log 2>&1
  echo "== z=$z $c: $(grep mla_decode $d/log | tail -1)" | tee -a $OUT/summary.log
  for f in $d/*.bin; do python3 scripts/decode_trace.py "$f" 2>&1 | grep -A 9 "step:"; done | tee -a $OUT/summary.log
done
echo "end t=$SECONDS" | tee -a $OUT/summary.log
