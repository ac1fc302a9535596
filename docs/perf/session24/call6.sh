#!/usr/bin/env bash
# session 24, call 6: the lock-step form with the next request's Q after the other's last Q·Kᵀ
# (m24e: call 5's test failure was that race) and with a tile in two boxes (m24f): their tests,
# stamps and an A/B against session 23's main (m23e).
set -u
tar xzf .gl/b24f.tgz; O=.gl/m23ecli; E=.gl/m24e; F=.gl/m24f; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name --format=csv | tee $OUT/summary.log
for v in m24f m24e; do
  d=/tmp/z/tr/$v; mkdir -p $d
  MLAKV_DECODE_FORM=ls MLAKV_TRACE_DIR=$d timeout 60 .gl/${v}trace/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --iters 20 > $d.log 2>&1
  echo "trace $v rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -1 $d.log | tee -a $OUT/summary.log
  cp $d/*.bin $OUT/trace-$v.bin
done
for v in m24f m24e; do
  timeout 200 .gl/$v/mlakv_tests --gtest_filter='*CudaDecodeForm*ls*:CudaDecode.LockStep*' > /tmp/z/tests-$v.log 2>&1
  echo "ls tests $v rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/z/tests-$v.log | head -10 | tee -a $OUT/summary.log
done
OUT=/tmp/z/ab ROUNDS=2 AB_TIMEOUT=60 scripts/ab-decode.sh $O $F@MLAKV_DECODE_FORM=ls -- \
  'bf16 B=128 H=128 ctx=4096' 'bf16 B=32 H=128 ctx=8192' 'bf16 B=1 H=128 ctx=32768' 'bf16 B=128 H=128 ctx=1024' >/dev/null 2>&1
tail -6 /tmp/z/ab/ab.log | tee -a $OUT/summary.log; echo "t=$SECONDS" | tee -a $OUT/summary.log
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
