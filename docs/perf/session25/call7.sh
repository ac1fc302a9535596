#!/usr/bin/env bash
# session 25, call 7: ncu source-level profiles (SASS lines: warp samples and stall reasons) of the
# lock-step form and the seesaw at bf16 B=128 H=128 4K, main's build (m25d).
set -u
tar xzf .gl/b25d.tgz; N=.gl/m25d; mkdir -p $OUT /tmp/z
for spec in "ls:mla_decode_sm90_ls:ls" "rm:mla_decode_sm90_kernel:rows"; do
  n=${spec%%:*}; rest=${spec#*:}; k=${rest%%:*}; form=${rest#*:}
  MLAKV_DECODE_FORM=$form timeout 200 ncu -k regex:$k --launch-skip 5 --launch-count 1 --section SourceCounters --section WarpStateStats \
    --section SchedulerStats --section SpeedOfLight --import-source yes -o /tmp/z/ncu-$n $N/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --iters 3 > /tmp/z/ncu-$n.log 2>&1
  echo "ncu $n rc=$? t=$SECONDS" | tee -a $OUT/summary.log; grep mla_decode /tmp/z/ncu-$n.log | tail -1 | tee -a $OUT/summary.log
  ncu -i /tmp/z/ncu-$n.ncu-rep --page source --csv --print-source sass > /tmp/z/sass-$n.csv 2>/tmp/z/sass-$n.err
  ncu -i /tmp/z/ncu-$n.ncu-rep --page details > $OUT/details-$n.txt 2>&1
  python3 scripts/ncu_sass_top.py /tmp/z/sass-$n.csv 60 > $OUT/sass-top-$n.txt 2>&1
  gzip -c /tmp/z/sass-$n.csv > $OUT/sass-$n.csv.gz
done
ls -la $OUT | tee -a $OUT/summary.log
echo "end t=$SECONDS" | tee -a $OUT/summary.log
