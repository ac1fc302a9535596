#!/usr/bin/env bash
# session 24, call 3: an ncu source-level profile (SASS lines: samples and stall reasons) of the
# lock-step form (m24b, MLAKV_DECODE_FORM=ls) at bf16 B=128 H=128 4K.
set -u
tar xzf .gl/b24b.tgz; N=.gl/m24b; mkdir -p $OUT /tmp/z
n=ls128
MLAKV_DECODE_FORM=ls timeout 200 ncu -k regex:mla_decode_sm90_ls --launch-skip 5 --launch-count 1 --section SourceCounters --section WarpStateStats \
  --section SchedulerStats --section SpeedOfLight --import-source yes -o /tmp/z/ncu-$n $N/mlakv bench decode --only 'bf16 B=128 H=128 ctx=4096' --iters 3 > /tmp/z/ncu-$n.log 2>&1
echo "ncu rc=$? t=$SECONDS" | tee -a $OUT/summary.log; tail -3 /tmp/z/ncu-$n.log | tee -a $OUT/summary.log
ncu -i /tmp/z/ncu-$n.ncu-rep --page source --csv --print-source sass > /tmp/z/sass-$n.csv 2>/tmp/z/sass-$n.err
ncu -i /tmp/z/ncu-$n.ncu-rep --page details > /tmp/z/details-$n.txt 2>&1
gzip -c /tmp/z/sass-$n.csv > $OUT/sass-$n.csv.gz; cp /tmp/z/details-$n.txt $OUT/
echo "end t=$SECONDS" | tee -a $OUT/summary.log
