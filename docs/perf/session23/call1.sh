#!/usr/bin/env bash
# session 23, call 1: main at 5862b15 (never run on a GPU: the split arithmetic in
# src/decode_split.hpp, ALIGN opt-in). On an H200 (SPEC §7's machine, none came in sessions
# 14–22) the full bench decode first; then session 22's next-call1 (tests, CLUSTER/TMA/ORDER and
# ALIGN A/Bs, stamps).
set -u
tar xzf .gl/b23a.tgz; mkdir -p $OUT
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
if [[ $name == *H200* ]]; then
  timeout 150 .gl/m23main/mlakv bench decode --json $OUT/decode-h200.json > $OUT/bench-decode-h200.txt 2>&1
  echo "h200 bench rc=$? t=$SECONDS" > $OUT/h200.log
fi
bash docs/perf/session22/next-call1.sh .gl/b23a.tgz .gl/m23main .gl/m23trace
