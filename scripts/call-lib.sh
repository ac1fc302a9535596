# Shared steps of a device call script (docs/perf/sessionNN/callN.sh), sourced by it:
#   call_start BUNDLE   unpacks BUNDLE (-C .gl), makes $OUT and /tmp/z/n (logs packed at the end),
#                       sets S (the summary log) and left() (seconds before $LIMIT), logs the GPU
#   call_traces "CASE;CASE" NAME...   runs each trace build .gl/NAME on the cases
#                       (MLAKV_TRACE_DIR=/tmp/z/tb-NAME), its tables into /tmp/z/n/trace-NAME.txt
#                       (scripts/decode_trace.py), the raw stamps into /tmp/z/n/trace-bins.tgz
#   call_ab NAME VARIANT... -- CASE...  scripts/ab-decode.sh, 3 rounds (ROUNDS), into /tmp/z/NAME;
#                       its records to $OUT/NAME.json, its log into the logs, its table into $S
#   call_tests BIN LOG FILTER SECONDS   runs BIN (an mlakv_tests) on FILTER, its summary into $S
#   call_memcheck BIN FILTER SECONDS      the same under compute-sanitizer memcheck, if time is left
#   call_ncu BIN CASE...  ncu source counters, warp states and memory tables of one decode step of
#                       each CASE while over 40 s are left: details and the hottest SASS lines into
#                       the logs, the SASS table to $OUT
#   call_end            packs /tmp/z/n into $OUT/logs.tgz
call_start() {
  tar xf "$1" -C .gl   # gz or xz: xz -9 halves the builds (the carry limit is 64 MiB with the tree)
  mkdir -p "$OUT" /tmp/z/n
  S=$OUT/summary.log
  nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv | tee "$S"
}
left() { echo $((LIMIT - SECONDS)); }
call_traces() {
  local cases=() c v dirs=()
  IFS=';' read -r -a c <<<"$1"
  shift
  for v in "${c[@]}"; do cases+=(--only "$v"); done
  for v in "$@"; do
    mkdir -p /tmp/z/tb-$v
    MLAKV_TRACE_DIR=/tmp/z/tb-$v timeout 60 .gl/$v/mlakv bench decode "${cases[@]}" > /tmp/z/n/trace-bench-$v.log 2>&1
    echo "trace $v rc=$? t=$SECONDS" | tee -a "$S"
    python3 scripts/decode_trace.py /tmp/z/tb-$v/*.bin > /tmp/z/n/trace-$v.txt 2>&1
    dirs+=(tb-$v)
  done
  tar czf /tmp/z/n/trace-bins.tgz -C /tmp/z "${dirs[@]}"
}
call_ab() {
  local name=$1 n=0 a
  shift
  for a in "$@"; do [ "$a" = -- ] && n=0 || n=$((n + 1)); done  # the cases: the words after --
  OUT=/tmp/z/$name ROUNDS=${ROUNDS:-3} AB_TIMEOUT=${AB_TIMEOUT:-60} scripts/ab-decode.sh "$@" >/dev/null 2>&1
  cp /tmp/z/$name/ab.json "$OUT/$name.json" 2>/dev/null
  cp /tmp/z/$name/ab.log "/tmp/z/n/$name.log" 2>/dev/null
  tail -$((n + 2)) /tmp/z/$name/ab.log | tee -a "$S"
  echo "$name t=$SECONDS" | tee -a "$S"
}
call_tests() {
  timeout "$4" "$1" --gtest_filter="$3" > "$2" 2>&1
  local rc=$?  # before any $(...) in the echo resets it (sessions 38-39 logged rc=0 for a timeout)
  echo "tests $(basename "$2") rc=$rc t=$SECONDS" | tee -a "$S"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure" "$2" | head -8 | tee -a "$S"
}
call_memcheck() {
  [ "$(left)" -gt $(( $3 + 5 )) ] && timeout "$3" compute-sanitizer --tool memcheck "$1" --gtest_filter="$2" > /tmp/z/n/memcheck.log 2>&1
  local rc=$?
  echo "memcheck rc=$rc t=$SECONDS" | tee -a "$S"
  tail -2 /tmp/z/n/memcheck.log | tee -a "$S"
}
call_ncu() {
  local bin=$1 c n
  shift
  for c in "$@"; do
    n=$(echo "$c" | tr -c 'A-Za-z0-9\n' _)
    [ "$(left)" -gt 40 ] || break
    timeout 60 ncu --clock-control none -k regex:mla_decode_sm90 --launch-skip 5 --launch-count 1 --section SourceCounters \
      --section WarpStateStats --section SpeedOfLight --section MemoryWorkloadAnalysis -o /tmp/z/ncu-$n \
      "$bin" bench decode --only "$c" --iters 3 > /tmp/z/n/ncu-$n.log 2>&1
    echo "ncu $n rc=$? t=$SECONDS" | tee -a "$S"
    ncu -i /tmp/z/ncu-$n.ncu-rep --page source --csv --print-source sass > /tmp/z/sass-$n.csv 2>/dev/null
    ncu -i /tmp/z/ncu-$n.ncu-rep --page details > /tmp/z/n/details-$n.txt 2>&1
    python3 scripts/ncu_sass_top.py /tmp/z/sass-$n.csv 50 > /tmp/z/n/sass-top-$n.txt 2>&1
    gzip -c /tmp/z/sass-$n.csv > $OUT/sass-$n.csv.gz
  done
}
call_end() {
  tar czf "$OUT/logs.tgz" -C /tmp/z n
  echo "end t=$SECONDS" | tee -a "$S"
}
