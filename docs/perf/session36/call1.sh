#!/usr/bin/env bash
# Prepared in session 35 for session 36's first call (decode-notes, "Plan for the next session
# (session 35's version)"). Bundle .gl/b36.tgz (-C .gl): m34 = main 9876310 (before the warpgroup
# index broadcast), m36 = main 7ce5062 (mlakv), tr36 = main with -DMLAKV_DECODE_TRACE=ON, trah36 =
# tr36 with the 32-row producer forced on at 16 rows (kLookAhead = true: session 34's ahead).
# .gl/t36.tgz (optional, -C .gl): t36 = main 8b7900b's mlakv_tests.
#   1. A/B m34 / m36 (3 rounds): the broadcast on the bf16 rows-as-M shapes, with FP8 controls.
#   2. Traces of fp8 B=128 H=16 4K on tr36 and trah36: per tile, the producer's issue against the
#      consumers' full wait (scripts/decode_trace.py).
#   3. m36's full bench on this machine (an H200: docs/perf/decode-h200.json).
set -u
BUNDLE=${BUNDLE:-.gl/b36.tgz} LIMIT=${LIMIT:-540}
tar xzf $BUNDLE -C .gl; mkdir -p $OUT /tmp/z/n
[ -f .gl/t36.tgz ] && tar xzf .gl/t36.tgz -C .gl
left() { echo $((LIMIT - SECONDS)); }
S=$OUT/summary.log
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv | tee $S
# t36 = main 8b7900b's mlakv_tests: bad block ids at s_q 2 (32 rows a CTA) had not run on a GPU.
if [ -x .gl/t36/mlakv_tests ]; then
  timeout 60 .gl/t36/mlakv_tests --gtest_filter='CudaDecode.BadBlockIds*' > /tmp/z/n/tests-t36.log 2>&1
  echo "tests t36 rc=$? t=$SECONDS" | tee -a $S; tail -3 /tmp/z/n/tests-t36.log | tee -a $S
  timeout 60 compute-sanitizer --tool memcheck .gl/t36/mlakv_tests --gtest_filter='CudaDecode.BadBlockIds*' > /tmp/z/n/memcheck-t36.log 2>&1
  echo "memcheck t36 rc=$? t=$SECONDS" | tee -a $S; tail -3 /tmp/z/n/memcheck-t36.log | tee -a $S
fi
OUT=/tmp/z/ab ROUNDS=${ROUNDS:-3} AB_TIMEOUT=90 scripts/ab-decode.sh .gl/m34 .gl/m36 -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=128 H=128 ctx=8192' 'bf16 B=32 H=128 ctx=65536' 'bf16 B=1 H=128 ctx=32768' \
  'bf16 B=128 H=16 ctx=4096' 'fp8 B=128 H=16 ctx=4096' 'fp8 B=64 H=32 ctx=32768' 'fp8 B=128 H=128 ctx=4096' >/dev/null 2>&1
cp /tmp/z/ab/ab.log /tmp/z/n/ab.log 2>/dev/null; cp /tmp/z/ab/ab.json $OUT/ab.json 2>/dev/null
tail -10 /tmp/z/ab/ab.log | tee -a $S; echo "ab t=$SECONDS" | tee -a $S
for v in tr36 trah36; do
  mkdir -p /tmp/z/tb-$v
  MLAKV_TRACE_DIR=/tmp/z/tb-$v timeout 60 .gl/$v/mlakv bench decode --only 'fp8 B=128 H=16 ctx=4096' \
    --only 'fp8 B=64 H=16 ctx=16384' > /tmp/z/n/trace-bench-$v.log 2>&1
  echo "trace $v rc=$? t=$SECONDS" | tee -a $S
  python3 scripts/decode_trace.py /tmp/z/tb-$v/*.bin > /tmp/z/n/trace-$v.txt 2>&1
  tar czf /tmp/z/n/trace-bin-$v.tgz -C /tmp/z tb-$v
done
[ $(left) -gt 60 ] && timeout 50 .gl/m36/mlakv bench decode --json $OUT/decode-m36.json > /tmp/z/n/bench-m36.log 2>&1
echo "bench m36 rc=$? t=$SECONDS" | tee -a $S
tar czf $OUT/logs.tgz -C /tmp/z n
echo "end t=$SECONDS" | tee -a $S
