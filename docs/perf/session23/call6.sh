#!/usr/bin/env bash
# session 23, call 6: the final main's stamps (measurement build) with the new defaults: bf16
# B=128 H=128 4K in the overlap order (call 1 stamped the release order), fp8 B=128 H=128 4K in
# the release order, bf16 B=1 H=128 32K.
set -u
tar xzf .gl/b23f.tgz; TR=.gl/m23ftrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
for c in 'bf16 B=128 H=128 ctx=4096' 'fp8 B=128 H=128 ctx=4096' 'bf16 B=1 H=128 ctx=32768'; do
  d=/tmp/z/tr/${c//[^A-Za-z0-9]/_}; mkdir -p $d
  MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only "$c" --iters 20 > $d.log 2>&1
  python3 scripts/decode_trace.py $d/*.bin > $d.txt 2>&1
  echo "== $c" | tee -a $OUT/summary.log
  grep -E "own tile k - 2|producer: |bytes landed|: 0 -> 4|: 7 -> 2|: 2 -> 3|: 3 -> 4|start -> publication|: 1 -> 2" $d.txt | tee -a $OUT/summary.log
done
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
