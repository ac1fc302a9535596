#!/usr/bin/env bash
# session 22, call 1: where bf16 H=128 and fp8 H=16 spend a tile now. The measurement build's
# stamps (SM clock under load, hand-off legs) for bf16 B=128 H=128 4K with and without pairs,
# bf16 B=1 H=128 32K, fp8 B=128 H=16 4K; the SM clock and power while bf16 H=128 runs
# (nvidia-smi); ncu source-level profiles (SASS lines: samples and stall reasons) of the same
# two B=128 shapes on main.
set -u
tar xzf .gl/b22a.tgz; G=.gl; M=$G/m22main; TR=$G/m22trace; mkdir -p $OUT /tmp/z/tr
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv | tee $OUT/summary.log
run_tr() {  # name env... -- case
  local name=$1; shift; local envs=(); while [[ $1 != -- ]]; do envs+=("$1"); shift; done; shift
  mkdir -p /tmp/z/tr/$name
  timeout 60 env "${envs[@]}" MLAKV_TRACE_DIR=/tmp/z/tr/$name $TR/mlakv bench decode --only "$1" --iters 20 > /tmp/z/tr/$name.log 2>&1
  echo "trace $name rc=$? t=$SECONDS" | tee -a $OUT/summary.log
  python3 scripts/decode_trace.py /tmp/z/tr/$name/*.bin > /tmp/z/tr/$name.txt 2>&1
  grep -E "SM clock|own tile k - 2|producer: (iteration|stage empty -> stage|TMA)|bytes landed|previous release|: 0 -> 4|: 7 -> 2|: 2 -> 3|: 3 -> 4" /tmp/z/tr/$name.txt | tee -a $OUT/summary.log
}
run_tr b128h128 -- 'bf16 B=128 H=128 ctx=4096'
run_tr b128h128nc MLAKV_DECODE_CLUSTER=0 -- 'bf16 B=128 H=128 ctx=4096'
run_tr b1h128 -- 'bf16 B=1 H=128 ctx=32768'
run_tr fp8b128h16 -- 'fp8 B=128 H=16 ctx=4096'
# clocks and power under a long bf16 H=128 run
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv -lms 50 > /tmp/z/clocks.log 2>&1 &
NS=$!
timeout 40 $M/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --only 'fp8 B=128 H=16 ctx=4096' --iters 3000 > /tmp/z/long.log 2>&1
kill $NS; echo "long rc t=$SECONDS" | tee -a $OUT/summary.log; grep -E "bf16|fp8|copy" /tmp/z/long.log | tee -a $OUT/summary.log
awk -F', ' 'NR > 1 { print $2, $3, $5 }' /tmp/z/clocks.log | sort | uniq -c | sort -rn | head -12 | tee -a $OUT/summary.log
# ncu source-level
for c in 'bf16 B=128 H=128 ctx=4096' 'fp8 B=128 H=16 ctx=4096'; do
  (( SECONDS > 420 )) && break
  n=$(echo "$c" | tr -c 'A-Za-z0-9\n' '_')
  timeout 150 ncu -k regex:mla_decode_sm90 --launch-skip 5 --launch-count 1 --section SourceCounters --section WarpStateStats \
    --section SchedulerStats --section SpeedOfLight --import-source yes -o /tmp/z/ncu-$n $M/mlakv bench decode --only "$c" --iters 3 > /tmp/z/ncu-$n.log 2>&1
  echo "ncu $c rc=$? t=$SECONDS" | tee -a $OUT/summary.log
  ncu -i /tmp/z/ncu-$n.ncu-rep --page source --csv --print-source sass > /tmp/z/sass-$n.csv 2>/tmp/z/sass-$n.err
  echo "source page rc=$? lines=$(wc -l < /tmp/z/sass-$n.csv)" | tee -a $OUT/summary.log; head -c 300 /tmp/z/sass-$n.err | tee -a $OUT/summary.log
  ncu -i /tmp/z/ncu-$n.ncu-rep --page details > /tmp/z/details-$n.txt 2>&1
done
tar czf $OUT/extra.tgz -C /tmp/z .
echo "end t=$SECONDS" | tee -a $OUT/summary.log
