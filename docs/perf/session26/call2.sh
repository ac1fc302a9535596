#!/usr/bin/env bash
# session 26, call 2: stamps of fp8 B=128 H=16 4K in the widened form and the register-operand form.
set -u
tar xzf .gl/b26b.tgz; TR=.gl/m26atrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
for v in widen rs; do
  d=/tmp/z/tr/$v; mkdir -p $d
  MLAKV_DECODE_FP8_FORM=$v MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' --iters 20 > $d.log 2>&1
  echo "trace $v rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -1 $d.log | tee -a $OUT/summary.log; cp $d/*.bin $OUT/trace-$v.bin
  python3 scripts/decode_trace.py $OUT/trace-$v.bin > $OUT/trace-$v.txt 2>&1
done
echo "end t=$SECONDS" | tee -a $OUT/summary.log
