#!/usr/bin/env bash
# Prepared at the end of session 22 for the next session's first call (main's build as
# .gl/<main> and its trace build as .gl/<trace> in the tarball given as $1): switches already in
# main that session 22 did not measure with whole requests on the rows-as-M form (bf16 B=128
# H=128: no pairs, cp.async tiles instead of TMA, the pre-session-13 order), and the stamps of
# the two that change the load leg, to tell the TMA unit's ~820-clock issue from the hand-off.
#   bash docs/perf/session22/next-call1.sh .gl/bundle.tgz .gl/m23main .gl/m23trace
set -u
tar xzf "$1"; M=$2; TR=$3; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/summary.log
# Session 22's last commit (the schedule's arithmetic in src/decode_split.hpp) never ran on a GPU.
timeout 150 ${M}/mlakv_tests --gtest_filter='CudaDecode.NearEqual*:CudaDecode.AlignedSplitsMatchReference:CudaDecode.ManyShortRequests:CudaDecode.FusedSmallBatch:CudaDecode.FormatsHeadsQueries:CudaDecode.LongContextOneRequest:DecodeSplit.*' > /tmp/z-tests.log 2>&1
echo "tests rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]" /tmp/z-tests.log | tee -a $OUT/summary.log
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $M $M@MLAKV_DECODE_CLUSTER=0 $M@MLAKV_DECODE_TMA=0 $M@MLAKV_DECODE_RM_ORDER=overlap -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=128 H=128 ctx=8192' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=1 H=128 ctx=32768' >/dev/null 2>&1
tail -6 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
# Splits aligned to parts (opt-in; decode-notes, session 22's plan item 4).
OUT=/tmp/z/ab2 ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $M $M@MLAKV_DECODE_ALIGN=2 $M@MLAKV_DECODE_ALIGN=16 -- \
  'bf16 B=32 H=128 ctx=8192' 'bf16 B=32 H=128 ctx=65536' 'bf16 B=8 H=128 ctx=8192' 'bf16 B=64 H=16 ctx=16384' 'fp8 B=64 H=16 ctx=16384' 'fp8 B=32 H=128 ctx=8192' >/dev/null 2>&1
tail -8 /tmp/z/ab2/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
for c in 'bf16 B=128 H=128 ctx=4096' 'bf16 B=1 H=128 ctx=32768'; do
  for v in default MLAKV_DECODE_CLUSTER=0 MLAKV_DECODE_TMA=0; do
    d=/tmp/z/tr/${c//[^A-Za-z0-9]/_}-${v//[^A-Za-z0-9]/_}; mkdir -p $d; e=(); [[ $v != default ]] && e=("$v")
    env "${e[@]}" MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only "$c" --iters 20 > $d.log 2>&1
    echo "== trace $c, $v" | tee -a $OUT/summary.log
    python3 scripts/decode_trace.py $d/*.bin | grep -E "own tile k - 2|producer: (iteration|stage empty -> stage)|bytes landed|: 0 -> 4|: 7 -> 2|: 2 -> 3|: 3 -> 4" | tee -a $OUT/summary.log
  done
done
d=/tmp/z/tr/fp8; mkdir -p $d
MLAKV_TRACE_DIR=$d timeout 60 $TR/mlakv bench decode --only 'fp8 B=128 H=128 ctx=4096' --iters 20 > $d.log 2>&1
echo "== trace fp8 B=128 H=128 4K (pairs: each CTA widens half of every tile into both)" | tee -a $OUT/summary.log
python3 scripts/decode_trace.py $d/*.bin | grep -E "own tile k - 2|producer:|bytes landed|: 0 -> 4|: 7 -> 2|: 2 -> 3|: 3 -> 4" | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
