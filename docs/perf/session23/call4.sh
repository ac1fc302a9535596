#!/usr/bin/env bash
# session 23, call 4: call 3's halves (m23c) were 27–59 % slower with the overlap order, whose
# release of the other's stage waits behind a Q·Kᵀ that now waits mid-sequence for its second
# half. The same binary with the release and adaptive orders, against m23b; stamps of release.
set -u
tar xzf .gl/b23c.tgz; B=.gl/m23b; C=.gl/m23c; TR=.gl/m23ctrace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $B $C@MLAKV_DECODE_RM_ORDER=release $C@MLAKV_DECODE_RM_ORDER=adaptive -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=8 H=128 ctx=65536' 'bf16 B=1 H=128 ctx=32768' >/dev/null 2>&1
tail -6 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
d=/tmp/z/tr/b128rel; mkdir -p $d
MLAKV_DECODE_RM_ORDER=release MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --iters 20 > $d.log 2>&1
python3 scripts/decode_trace.py $d/*.bin > $d.txt 2>&1
grep -E "own tile k - 2|producer: |bytes landed|: 0 -> 4|: 7 -> 2|: 2 -> 3|: 3 -> 4" $d.txt | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
