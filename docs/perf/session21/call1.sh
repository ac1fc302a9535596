#!/usr/bin/env bash
# session 21, call 1: session 20's call 3 (the exact fp8_ds_mla pairs, second version, against
# main's 32-row form and the opt-in fp16 pairs; tests, bench and memcheck only if it wins by 7 %),
# then, while time is left, B = 1 probes on main's build: fewer parts (MLAKV_DECODE_PARTS) and
# the back-to-back step (a decode loop's steady state) against the event-bracketed one.
set -u
bash docs/perf/session20/call3-not-run.sh
M=.gl/m20main
if (( SECONDS < 330 )); then
  OUT=/tmp/y/b1 ROUNDS=2 AB_TIMEOUT=30 scripts/ab-decode.sh $M $M@MLAKV_DECODE_PARTS=66 $M@MLAKV_DECODE_PARTS=100 -- 'bf16 B=1 H=16 ctx=65536' 'fp8 B=1 H=16 ctx=65536' 'bf16 B=1 H=16 ctx=1024' >/dev/null 2>&1
  tail -4 /tmp/y/b1/ab.log | tee -a $OUT/summary.log
fi
if (( SECONDS < 380 )); then
  OUT=/tmp/y/b2b ROUNDS=1 AB_TIMEOUT=30 AB_ARGS='--back-to-back 8' scripts/ab-decode.sh $M -- 'bf16 B=1 H=16 ctx=65536' 'bf16 B=1 H=16 ctx=1024' 'bf16 B=128 H=128 ctx=4096' >/dev/null 2>&1
  tail -4 /tmp/y/b2b/ab.log | tee -a $OUT/summary.log
fi
echo "end t=$SECONDS" | tee -a $OUT/summary.log
[[ -d /tmp/y ]] && tar czf $OUT/extra21.tgz -C /tmp/y .
