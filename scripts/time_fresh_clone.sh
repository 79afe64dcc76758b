#!/usr/bin/env bash
# Times the README's two test commands as a newcomer meets them: a fresh clone of this
# checkout's HEAD (committed work only) in a new folder, with its own .venv and empty Triton and
# TorchInductor caches, then
#   1. the set-up (scripts/setup_env.sh: .venv, the pinned packages, fusedrnn._C),
#   2. `bash scripts/test.sh` (the behaviour tests; its set-up step finds everything in place),
#   3. `bash scripts/bench.sh` (the main job; without a GPU its CPU default),
#   4. `bash scripts/test.sh --gates` (skipped with --no-gates).
# 1 + 2 is what the README's test command takes from a fresh clone, 1 + 3 its main job. Each phase's wall-clock and
# CPU time (user + sys, its subprocesses included) is printed at the end and written to
# DIR/times.txt; each phase's output goes to DIR/<phase>.log. pip's own download cache is left
# as it is (a first install anywhere also downloads the packages). Meaningful on an idle machine.
#   bash scripts/time_fresh_clone.sh [--no-gates] [DIR]      (DIR: a new folder under /tmp)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
gates=1
if [ "${1:-}" = "--no-gates" ]; then
    gates=0
    shift
fi
DIR="${1:-$(mktemp -d /tmp/fusedrnn-fresh-clone.XXXXXX)}"
mkdir -p "$DIR"
git clone --quiet "$ROOT" "$DIR/fusedrnn"
export TRITON_CACHE_DIR="$DIR/triton-cache" TORCHINDUCTOR_CACHE_DIR="$DIR/inductor-cache"
unset FUSEDRNN_VENV FUSEDRNN_FULL_TESTS FUSEDRNN_CUDA_ARCHS FUSEDRNN_SKIP_CUDA_BUILD
echo "fresh clone of $(git -C "$ROOT" rev-parse --short HEAD) in $DIR/fusedrnn on $(nproc) cores; logs in $DIR"

TIMEFORMAT="%R %U %S"  # bash's `time`: wall, user and sys seconds, subprocesses included
phase() {  # phase NAME COMMAND...: run it in the clone, append "NAME wall cpu exit" to times.txt
    local name="$1" status=0
    shift
    echo "== $name: $*"
    { time { (cd "$DIR/fusedrnn" && "$@") >"$DIR/$name.log" 2>&1; }; } 2>"$DIR/$name.time" || status=$?
    awk -v n="$name" -v s="$status" '{printf "%-6s %6.0f s wall %6.0f s CPU  exit %d\n", n, $1, $2 + $3, s}' \
        "$DIR/$name.time" | tee -a "$DIR/times.txt"
    tail -3 "$DIR/$name.log"
    return "$status"
}
rc=0
phase setup bash -c '. scripts/setup_env.sh' || rc=1
[ "$rc" = 0 ] && { phase tests bash scripts/test.sh || rc=1; }
[ "$rc" = 0 ] && { phase bench bash scripts/bench.sh --progress lines || rc=1; }
[ "$rc" = 0 ] && [ "$gates" = 1 ] && { phase gates bash scripts/test.sh --gates || rc=1; }
echo "== times (setup + tests is the README's test command from a fresh clone):"
cat "$DIR/times.txt"
awk '$1 == "setup" || $1 == "tests" {w += $2; c += $5} END {printf "setup + tests: %.0f s wall (%.1f min), %.0f s CPU\n", w, w / 60, c}' "$DIR/times.txt"
exit "$rc"
