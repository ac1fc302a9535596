#!/usr/bin/env bash
# Builds mlakv with the CUDA backend, runs the GPU tests (plain, then under compute-sanitizer's
# memcheck and racecheck) and the benchmarks, on a machine with a GPU. Run from the repository
# root. Logs and JSON go to $OUT (default ./gpu-check-out); at most 8 files, so that the device
# tool brings all of them back.
#
#   UNPACK         a tarball (e.g. .gl/bundle.tgz from scripts/pack-binaries.sh) unpacked into the
#                  repository root first: prebuilt binaries travel gzipped, about half their size,
#                  so that one call's carry (64 MiB) holds several variants
#   BUILD_DIR      an existing build directory to reuse (else one is configured in build-gpu)
#   PREBUILT       a folder holding mlakv and mlakv_tests built elsewhere for sm_90a: no build here
#   PROBE          decode cases (`bench decode --only` texts, ';'-separated) run once, 3 iterations,
#                  under a 60-second timeout, before anything else: a kernel that hangs shows here
#   GTEST_FILTER   which tests run on the GPU (default '*Cuda*')
#   TESTS          0 skips the tests (and the sanitizer runs); TEST_TIMEOUT: seconds for them
#                  (default 900: a kernel that hangs must not take the whole call)
#   SANITIZE       0 skips compute-sanitizer; SANITIZE_FILTER picks its tests (default: the GPU
#                  tests but the NCCL group ones); SANITIZE_TOOLS (default "memcheck racecheck")
#   BENCH          0 skips the benchmarks; BENCH_ARGS adds flags (e.g. --quick)
#   BENCH_DECODE   0 skips `bench decode` only (BENCH_CACHE: `bench cache`); `bench dcp` runs where
#                  there are 2+ GPUs
#   STEP_TIMEOUT   seconds allowed per sanitizer run (default 900)
#   AB             decode variants to compare (';'-separated, scripts/ab-decode.sh: DIR or
#                  DIR@NAME=VALUE, e.g. "$PREBUILT;$PREBUILT@MLAKV_DECODE_FP8_FORM=widen") on the
#                  AB_CASES (`bench decode --only` texts, ';'-separated), ROUNDS rounds; ab.log and
#                  ab.json in $OUT
#   FP8_CHECK      0 skips mlakv_wgmma_fp8_check (run where the binaries include it)
#   WGMMA_PROBE    1 runs mlakv_wgmma_probe (wgmma costs by shape, the Q·Kᵀ chain with per-block
#                  waits) into summary.log
#   TRACE          decode cases (`bench decode --only` texts, ';'-separated) to run on the
#                  measurement build that stamps each role's hand-offs; the readings go to
#                  $OUT/trace.txt (scripts/decode_trace.py). TRACE_CLI: an `mlakv` built with
#                  -DMLAKV_DECODE_TRACE=ON (else one is built in build-trace)
#
# Header-only CLI11 / nlohmann-json missing on the machine: put CLI/ and nlohmann/ under
# .deps/include (CMake looks there). Exit status: non-zero when the build, the tests or a
# sanitizer run failed; a missing or failing `bench decode` only leaves a note in the log.
set -u -o pipefail
export NCCL_NVLS_ENABLE=0  # NVLink multicast stays off on shared machines

OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
FILTER="${GTEST_FILTER:-*Cuda*}"
STEP_TIMEOUT="${STEP_TIMEOUT:-900}"
JOBS="$(nproc 2>/dev/null || echo 8)"
status=0

log() { echo "[gpu-check $(date +%H:%M:%S)] $*" | tee -a "$OUT/summary.log"; }
# only_args "a;b": ONLY=(--only a --only b), the `bench decode` filters for ';'-separated cases.
only_args() {
  local cases c
  IFS=';' read -r -a cases <<<"$1"
  ONLY=()
  for c in "${cases[@]}"; do ONLY+=(--only "$c"); done
}
# configure DIR [cmake args...]: a Release sm_90a CUDA build. CMake releases older than the CUDA 13
# toolkit do not know its C++20 flag: give it.
configure() {
  local dir="$1" gen=()
  shift
  command -v ninja >/dev/null && gen=(-G Ninja)
  cmake -S . -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DMLAKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 "$@"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv >"$OUT/summary.log" 2>&1 || true

if [[ -n "${UNPACK:-}" ]]; then
  if ! tar -xzf "$UNPACK"; then
    log "unpacking $UNPACK FAILED"
    exit 1
  fi
  log "unpacked $UNPACK: $(tar -tzf "$UNPACK" | grep -c /) files"
fi

if [[ -n "${PREBUILT:-}" ]]; then
  B="$PREBUILT"
  log "using the binaries in $B (no build)"
elif [[ -n "${BUILD_DIR:-}" && -f "${BUILD_DIR}/CMakeCache.txt" ]]; then
  B="$BUILD_DIR"
  log "reusing build directory $B"
else
  B="${BUILD_DIR:-build-gpu}"
  log "configuring $B"
  if ! configure "$B" >"$OUT/build.log" 2>&1; then
    log "configure FAILED (see build.log)"
    tail -30 "$OUT/build.log"
    exit 1
  fi
fi

if [[ -z "${PREBUILT:-}" ]]; then
  log "building with $JOBS jobs"
  # The tests first: a CLI that fails to link must not keep the GPU tests from running.
  if ! cmake --build "$B" -j "$JOBS" --target mlakv_tests >>"$OUT/build.log" 2>&1; then
    log "build of mlakv_tests FAILED (see build.log)"
    grep -E "error|Error" "$OUT/build.log" | head -30
    status=1
  fi
  if ! cmake --build "$B" -j "$JOBS" --target mlakv_cli >>"$OUT/build.log" 2>&1; then
    log "build of the mlakv CLI FAILED (see build.log)"
    grep -E "error|Error" "$OUT/build.log" | head -30
    status=1
  fi
  log "build done"
fi

TESTBIN="$B/mlakv_tests"
CLI="$B/mlakv"
if [[ -n "${PROBE:-}" && -x "$CLI" ]]; then
  only_args "$PROBE"
  log "probe: ${PROBE}"
  timeout 60 "$CLI" bench decode --iters 3 "${ONLY[@]}" >>"$OUT/summary.log" 2>&1
  rc=$?
  if [[ $rc == 0 ]]; then
    log "probe ok"
  else
    status=1
    log "probe FAILED (exit $rc; 124: it hung)"
  fi
fi
if [[ "${TESTS:-1}" == 0 ]]; then
  log "tests skipped (TESTS=0)"
elif [[ -x "$TESTBIN" ]]; then
  log "tests ($FILTER)"
  if timeout "${TEST_TIMEOUT:-900}" "$TESTBIN" --gtest_filter="$FILTER" >"$OUT/tests.log" 2>&1; then
    log "tests ok: $(grep -E '^\[  PASSED  \]' "$OUT/tests.log")"
  else
    status=1
    log "tests FAILED (or timed out: the last test started is the one)"
    grep -E "FAILED|Failure|error" "$OUT/tests.log" | head -30
    grep -E "^\[ RUN" "$OUT/tests.log" | tail -1
  fi
  if [[ "${SANITIZE:-1}" != 0 ]] && command -v compute-sanitizer >/dev/null; then
    # One log for every tool, so that $OUT stays within the files the device tool brings back.
    sfilter="${SANITIZE_FILTER:-*Cuda*-*CudaDcpGroup*}"
    for tool in ${SANITIZE_TOOLS:-memcheck racecheck}; do
      log "compute-sanitizer --tool $tool ($sfilter)"
      echo "==== compute-sanitizer --tool $tool" >>"$OUT/sanitizer.log"
      if timeout "$STEP_TIMEOUT" compute-sanitizer --tool "$tool" --error-exitcode 99 \
          "$TESTBIN" --gtest_filter="$sfilter" >"$OUT/sanitizer.$tool.tmp" 2>&1; then
        log "$tool ok: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer.$tool.tmp" | tail -1)"
      else
        rc=$?
        status=1
        log "$tool FAILED (exit $rc): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer.$tool.tmp" | tail -1)"
        grep -E "Invalid|Race|Error|FAILED" "$OUT/sanitizer.$tool.tmp" | head -20
      fi
      grep -vE '^\[ +(RUN|OK) +\]' "$OUT/sanitizer.$tool.tmp" >>"$OUT/sanitizer.log"
      rm -f "$OUT/sanitizer.$tool.tmp"
    done
  fi
else
  status=1
  log "no test binary at $TESTBIN"
fi

if [[ "${BENCH:-1}" != 0 ]]; then
  if [[ -x "$CLI" ]]; then
    touch "$OUT/bench.log"
    if [[ "${BENCH_CACHE:-1}" == 0 ]]; then
      log "bench cache skipped (BENCH_CACHE=0)"
    elif log "bench cache" && "$CLI" bench cache --json "$OUT/cache.json" ${BENCH_ARGS:-} >>"$OUT/bench.log" 2>&1; then
      log "bench cache ok"
    else
      status=1
      log "bench cache FAILED"
    fi
    if [[ "${BENCH_DECODE:-1}" == 0 ]]; then
      log "bench decode skipped (BENCH_DECODE=0)"
    elif log "bench decode" && "$CLI" bench decode --json "$OUT/decode.json" ${BENCH_ARGS:-} >>"$OUT/bench.log" 2>&1; then
      log "bench decode ok"
    else
      log "bench decode did not run (not implemented yet, or failed): see bench.log"
    fi
    ngpu="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')"
    if [[ "$ngpu" -ge 2 ]]; then
      log "bench dcp ($ngpu GPUs)"
      if NCCL_NVLS_ENABLE=0 "$CLI" bench dcp --json "$OUT/dcp.json" ${BENCH_ARGS:-} >>"$OUT/bench.log" 2>&1; then
        log "bench dcp ok"
      else
        status=1
        log "bench dcp FAILED"
      fi
    fi
    tail -80 "$OUT/bench.log"
  else
    status=1
    log "no CLI binary at $CLI"
  fi
fi

# ---- FP8 tensor-core building blocks on one tile (bench/wgmma_fp8_check.cu) -----------------------
if [[ "${FP8_CHECK:-1}" != 0 && -x "$B/mlakv_wgmma_fp8_check" ]]; then
  log "mlakv_wgmma_fp8_check"
  if timeout 120 "$B/mlakv_wgmma_fp8_check" >>"$OUT/summary.log" 2>&1; then
    log "fp8 check ok"
  else
    status=1
    log "fp8 check FAILED"
  fi
fi

# ---- wgmma issue costs and the Q·Kᵀ chain with per-block waits (bench/wgmma_probe.cu) --------------
if [[ "${WGMMA_PROBE:-0}" != 0 ]]; then
  if [[ -x "$B/mlakv_wgmma_probe" ]]; then
    log "mlakv_wgmma_probe"
    timeout 120 "$B/mlakv_wgmma_probe" >>"$OUT/summary.log" 2>&1 || log "wgmma probe FAILED"
  else
    log "no mlakv_wgmma_probe in $B"
  fi
fi

# ---- A/B of decode variants ---------------------------------------------------------------------------
if [[ -n "${AB:-}" ]]; then
  IFS=';' read -r -a ab_variants <<<"$AB"
  IFS=';' read -r -a ab_cases <<<"${AB_CASES:-}"
  log "decode A/B: ${AB} on ${AB_CASES:-every case}"
  OUT="$OUT" bash "$(dirname "$0")/ab-decode.sh" "${ab_variants[@]}" -- "${ab_cases[@]}" >/dev/null 2>&1 || log "A/B FAILED"
  tail -"$(( ${#ab_cases[@]} + 3 ))" "$OUT/ab.log"
fi

# ---- decode timeline (measurement build) -----------------------------------------------------------
if [[ -n "${TRACE:-}" ]]; then
  TCLI="${TRACE_CLI:-}"
  if [[ -z "$TCLI" ]]; then
    TCLI=build-trace/mlakv
    log "building the trace CLI in build-trace"
    configure build-trace -DMLAKV_DECODE_TRACE=ON -DMLAKV_BUILD_TESTS=OFF >>"$OUT/build.log" 2>&1 &&
      cmake --build build-trace -j "$JOBS" --target mlakv_cli >>"$OUT/build.log" 2>&1 || log "trace build FAILED (see build.log)"
  fi
  if [[ -x "$TCLI" ]]; then
    only_args "$TRACE"
    mkdir -p "$OUT/trace-bin"
    log "decode trace: ${TRACE}"
    MLAKV_TRACE_DIR="$OUT/trace-bin" "$TCLI" bench decode "${ONLY[@]}" >>"$OUT/bench.log" 2>&1 || log "trace bench FAILED"
    python3 "$(dirname "$0")/decode_trace.py" "$OUT"/trace-bin/*.bin >"$OUT/trace.txt" 2>&1
    rm -rf "$OUT/trace-bin"  # the device tool brings back at most 8 files
    log "decode trace in trace.txt"
  else
    status=1
    log "no trace CLI at $TCLI"
  fi
fi

# ---- Python package (issue 6) ------------------------------------------------------------------
# Builds the wheel's extension with the CUDA backend and runs python/tests (the torch/CuPy device
# tests run here; they skip on CI). PYTHON=0 skips it. Logs go into build.log and tests.log so that
# $OUT stays within 8 files. A failure is logged and counted, and the script goes on.
if [[ "${PYTHON:-1}" != 0 ]]; then
  log "python: pip install . (CUDA backend)"
  if CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" python3 -m pip install --no-build-isolation --no-deps \
      -Cbuild-dir=build-gpu-py -Ccmake.define.MLAKV_CUDA=ON -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90a \
      . >>"$OUT/build.log" 2>&1; then
    log "python: pytest python/tests"
    echo "==== python -m pytest python/tests" >>"$OUT/tests.log"
    if PYTHONFAULTHANDLER=1 timeout "$STEP_TIMEOUT" python3 -m pytest python/tests -q -rs >>"$OUT/tests.log" 2>&1; then
      log "python tests ok: $(tail -1 "$OUT/tests.log")"
    else
      status=1
      log "python tests FAILED: $(tail -1 "$OUT/tests.log")"
      grep -E "^(FAILED|ERROR|E )" "$OUT/tests.log" | head -30
    fi
  else
    status=1
    log "python: pip install FAILED (see build.log)"
    grep -E "error|Error" "$OUT/build.log" | tail -20
  fi
fi

log "done, status $status"
exit $status
