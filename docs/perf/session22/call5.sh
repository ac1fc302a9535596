#!/usr/bin/env bash
# session 22, call 5: call 4's full run had bf16 and fp8 B=1 H=16 ctx=1024 at 43.6 µs (15.1 in
# call 3): the first shape of each format's grid. Both builds, alone, after the shape that
# preceded it in the full run, and interleaved.
set -u
tar xzf .gl/b22c.tgz; tar xzf .gl/b22d.tgz; G=.gl; W2=$G/m22w2; C=$G/m22comb; mkdir -p $OUT
for r in 1 2; do
  for v in $W2 $C; do
    echo "== $v round $r" | tee -a $OUT/summary.log
    timeout 60 $v/mlakv bench decode --only 'bf16 B=1 H=16 ctx=1024' --only 'fp8 B=1 H=16 ctx=1024' --only 'bf16 B=1 H=16 ctx=8192' 2>&1 | grep mla_decode | tee -a $OUT/summary.log
    timeout 60 $v/mlakv bench decode --only 'bf16/mma B=128 H=128 ctx=4096' --only 'bf16 B=1 H=16 ctx=1024' --only 'fp8 B=1 H=16 ctx=65536' 2>&1 | grep mla_decode | tee -a $OUT/summary.log
  done
done
echo "end t=$SECONDS" | tee -a $OUT/summary.log
