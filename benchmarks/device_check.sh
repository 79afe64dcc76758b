#!/usr/bin/env bash
# The one prepared script for the lent GPU machine (see benchmarks/README.md).
# Runs from the repository root there (no internet, ../shared does not travel):
#   build the CUDA extension for sm_90 -> pytest tests/gpu -> the benchmark suite at the
#   anchor shapes -> compute-sanitizer on one small case per cell -> the CPU tests if time
#   is left -> a short summary table, printed last.
# Every stage runs under `timeout` with its own budget (defaults add up to < 8 minutes);
# a stage that fails or times out is logged and the script goes on.
# Logs and results land in $OUT (at most 8 files come back from the device machine):
#   device_check.log build.log tests.log bench.log sanitizer.log results/{results.json,results.md,speedup.png}
# Knobs (environment): BUDGET_BUILD BUDGET_GPU_TESTS BUDGET_BENCH BUDGET_SANITIZER (per cell)
#   BUDGET_TOTAL (cap for the optional CPU tests), BENCH_ARGS (extra suite arguments),
#   FUSEDRNN_GIT_COMMIT (recorded in the results; the device copy may have no .git), PYTHON,
#   SKIP (comma list of stages to leave out: build,gpu-tests,bench,sanitizer,cpu-tests; for dry runs).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/device_check_out}"
mkdir -p "$OUT/results"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
BUDGET_BUILD="${BUDGET_BUILD:-120}"
BUDGET_GPU_TESTS="${BUDGET_GPU_TESTS:-75}"
BUDGET_BENCH="${BUDGET_BENCH:-150}"
BUDGET_SANITIZER="${BUDGET_SANITIZER:-30}"
BUDGET_TOTAL="${BUDGET_TOTAL:-440}"
SKIP=",${SKIP:-},"

SUMMARY=()
FAILED=0
note() { SUMMARY+=("$(printf '%-22s %-16s %6s  %s' "$1" "$2" "$3" "$4")"); }

skipped() { case "$SKIP" in *",$1,"*) note "$1" "skipped (SKIP)" "0s" ""; return 0 ;; esac; return 1; }

# stage NAME BUDGET LOG CMD...: run CMD under timeout, output appended to LOG; sets STAGE_RC
stage() {
    local name="$1" budget="$2" log="$3"; shift 3
    local t0=$SECONDS
    echo "=== [$name] (budget ${budget}s) $*" | tee -a "$log"
    timeout --kill-after=5 "$budget" "$@" >>"$log" 2>&1
    STAGE_RC=$?
    STAGE_S=$((SECONDS - t0))
    case $STAGE_RC in
        0) STAGE_VERDICT=ok ;;
        124|137) STAGE_VERDICT="TIMED OUT"; FAILED=1 ;;
        *) STAGE_VERDICT="FAILED rc=$STAGE_RC"; FAILED=1 ;;
    esac
    echo "=== [$name] $STAGE_VERDICT after ${STAGE_S}s (log: $(basename "$log"))"
    tail -n 8 "$log" | sed 's/^/    /'
}

main() {
echo "=== environment ($(date -u +%FT%TZ))"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 | head -n 2
nvcc --version 2>&1 | tail -n 1
"$PY" -c "import sys, torch, numpy; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| cudnn', torch.backends.cudnn.version(), '| numpy', numpy.__version__, '| gpu', torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1
"$PY" -c "import triton; print('triton', triton.__version__)" 2>&1
command -v compute-sanitizer >/dev/null || echo "compute-sanitizer: not on PATH"
echo "commit: ${FUSEDRNN_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo 'unknown (no .git here; pass FUSEDRNN_GIT_COMMIT)')}"

# 1. build the extension for sm_90 only, into this tree
export FUSEDRNN_CUDA_ARCHS=90
export MAX_JOBS="${MAX_JOBS:-16}"
if ! skipped build; then
stage build "$BUDGET_BUILD" "$OUT/build.log" "$PY" -m pip install --no-build-isolation --no-deps --no-input -e .
build_detail="$(grep -m1 -iE '^(error|.*error:)' "$OUT/build.log" | cut -c1-60)"
"$PY" -c "import fusedrnn; [print(f'  {k:10s} {ok!s:5s} {why}') for k, (ok, why) in fusedrnn.available_backends().items()]" 2>&1 | tee -a "$OUT/build.log"
backends="$("$PY" -c "import fusedrnn; print(','.join(k for k, (ok, _) in fusedrnn.available_backends().items() if ok and k in ('cuda', 'triton')) or 'none')" 2>/dev/null)"
note build "$STAGE_VERDICT" "${STAGE_S}s" "fused backends available: ${backends:-?} ${build_detail}"
fi

# 2. GPU tests
if skipped gpu-tests; then :
elif [ -d tests/gpu ]; then
    stage gpu-tests "$BUDGET_GPU_TESTS" "$OUT/tests.log" "$PY" -m pytest -q -rfE -p no:cacheprovider tests/gpu
    [ "$STAGE_RC" = 5 ] && STAGE_VERDICT="no tests (rc=5)"
    note "pytest tests/gpu" "$STAGE_VERDICT" "${STAGE_S}s" "$(grep -E '(passed|failed|error|skipped|no tests ran)' "$OUT/tests.log" | tail -n 1 | cut -c1-70)"
else
    echo "tests/gpu not found: GPU tests skipped" | tee -a "$OUT/tests.log"
    note "pytest tests/gpu" "missing" "0s" "no tests/gpu folder"
fi

# 3. the suite at the anchor shapes; it stops starting cases at --time-limit and writes what it has
bench_limit=$((BUDGET_BENCH > 75 ? BUDGET_BENCH - 45 : BUDGET_BENCH * 2 / 3))
if ! skipped bench; then
# shellcheck disable=SC2086
stage bench "$BUDGET_BENCH" "$OUT/bench.log" "$PY" -m benchmarks.run --no-progress --dtypes bf16,fp16,fp32 \
    --time-limit "$bench_limit" --out "$OUT/results" ${BENCH_ARGS:-}
[ "$STAGE_RC" = 1 ] && STAGE_VERDICT="WRONG results"
note "benchmarks.run" "$STAGE_VERDICT" "${STAGE_S}s" "$(grep -cE '\| skipped' "$OUT/results/results.md" 2>/dev/null) rows skipped by the time limit"
fi

# 4. compute-sanitizer memcheck on one small case per cell (tests/gpu/sanitizer_case.py CELL)
if skipped sanitizer; then :
elif [ ! -f tests/gpu/sanitizer_case.py ]; then
    echo "tests/gpu/sanitizer_case.py not found (the CUDA backend's file): sanitizer stage skipped" | tee -a "$OUT/sanitizer.log"
    note compute-sanitizer "missing" "0s" "tests/gpu/sanitizer_case.py not found"
elif ! command -v compute-sanitizer >/dev/null; then
    echo "compute-sanitizer not on PATH: sanitizer stage skipped" | tee -a "$OUT/sanitizer.log"
    note compute-sanitizer "missing" "0s" "compute-sanitizer not on PATH"
else
    for cell in lstm gru rnn_tanh; do
        # no caching allocator, so an out-of-bounds access cannot land inside a pooled block
        stage "sanitizer $cell" "$BUDGET_SANITIZER" "$OUT/sanitizer.log" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
            compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 "$PY" tests/gpu/sanitizer_case.py "$cell"
        [ "$STAGE_RC" = 99 ] && STAGE_VERDICT="MEMORY ERRORS"
        note "sanitizer $cell" "$STAGE_VERDICT" "${STAGE_S}s" "$(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -n 1 | cut -c1-60)"
    done
fi

# 5. the CPU tests, if time is left (this image's numpy may be too new for the Triton interpreter)
left=$((BUDGET_TOTAL - SECONDS))
if skipped cpu-tests; then :
elif [ "$left" -ge 30 ]; then
    stage cpu-tests "$left" "$OUT/tests.log" "$PY" -m pytest -q -rfE -p no:cacheprovider tests --ignore=tests/gpu
    note "pytest tests (CPU)" "$STAGE_VERDICT" "${STAGE_S}s" "$(grep -E '(passed|failed|error)' "$OUT/tests.log" | tail -n 1 | cut -c1-70)"
else
    note "pytest tests (CPU)" "not run" "0s" "only ${left}s left of ${BUDGET_TOTAL}s"
fi

echo
if [ -f "$OUT/results/results.json" ]; then
    echo "=== geometric-mean speedups (from $OUT/results/results.json)"
    "$PY" -c "import json, sys; from benchmarks import report; d = json.load(open(sys.argv[1])); print(report.summary_text([s for s in d['summary'] if s['provider'] != d['meta'].get('baseline') and (s['timed'] or s['wrong'])], d['meta']))" "$OUT/results/results.json" 2>&1
fi
echo
echo "=== device check summary ($SECONDS s in all; logs and results in \$OUT)"
printf '%-22s %-16s %6s  %s\n' stage result time detail
for line in "${SUMMARY[@]}"; do echo "$line"; done
return $FAILED
}

main "$@" 2>&1 | tee -a "$OUT/device_check.log"
exit "${PIPESTATUS[0]}"
