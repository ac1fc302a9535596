#!/usr/bin/env bash
# Profiles single `mlakv bench` cases with Nsight Compute, one kernel launch each, into one text
# report ($OUT/ncu.txt by default). Each argument is "what|kernel-regex|only-filter", e.g.
#   scripts/ncu-cases.sh "cache|dsv4_gather|dsv4_dequant_gather dsv4 1x2048"
# CLI: the mlakv binary (default build-gpu/mlakv). SKIP: launches skipped first (default 5, the
# bench's warm-up). SECTIONS: ncu sections (default: speed of light, memory, launch, occupancy,
# warp states, scheduler, source counters). NCU_ARGS: more ncu flags (e.g. "--cache-control none
# --clock-control none" to time a kernel as it runs after its producer, L2 warm, clocks free).
set -u -o pipefail
CLI="${CLI:-build-gpu/mlakv}"
OUT="${OUT:-$PWD/gpu-check-out}"
REPORT="${REPORT:-$OUT/ncu.txt}"
mkdir -p "$OUT"
SECTIONS="${SECTIONS:-SpeedOfLight MemoryWorkloadAnalysis LaunchStats Occupancy WarpStateStats SchedulerStats SourceCounters}"
sec=()
for s in $SECTIONS; do sec+=(--section "$s"); done
for c in "$@"; do
  IFS='|' read -r what kernel only <<<"$c"
  echo "==== $what | $kernel | $only" >>"$REPORT"
  timeout "${STEP_TIMEOUT:-240}" ncu -k "regex:$kernel" --launch-skip "${SKIP:-5}" --launch-count 1 ${NCU_ARGS:-} "${sec[@]}" \
    "$CLI" bench "$what" --iters 3 --only "$only" >>"$REPORT" 2>&1 || echo "ncu exit $?" >>"$REPORT"
done
