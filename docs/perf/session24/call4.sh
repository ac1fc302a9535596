#!/usr/bin/env bash
# session 24, call 4: the lock-step form's stamps with every P·V's completion (m24ctrace).
set -u
tar xzf .gl/b24c.tgz; TR=.gl/m24ctrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
for c in 'bf16 B=128 H=128 ctx=4096'; do
  d=/tmp/z/tr/b128; mkdir -p $d
  MLAKV_DECODE_FORM=ls MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only "$c" --iters 20 > $d.log 2>&1
  echo "trace rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -1 $d.log | tee -a $OUT/summary.log
  cp $d/*.bin $OUT/trace-b128.bin
done
echo "end t=$SECONDS" | tee -a $OUT/summary.log
