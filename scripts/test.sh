#!/usr/bin/env bash
# The README's two test commands; both set up .venv first (scripts/setup_env.sh) and need no GPU
# (Triton kernels run through TRITON_INTERPRET=1 under the pinned triton; tests/gpu skip
# without a CUDA device). CI (.ci/run) runs the first, then the second.
#
#   bash scripts/test.sh [--full] [pytest arguments]
#       the behaviour tests: `pytest -n 2 tests tools/tests`, every test not marked `gate`, in two
#       processes (pytest-xdist; each test file in one of them; `-n 0` runs them in this one)
#   bash scripts/test.sh --gates [--full] [pytest arguments]
#       the cases of the behaviour tests that the first command's sample left out (in two
#       processes), the compile gates: the tests marked `gate` (`pytest --gates`: they compile
#       kernels for sm_90 or read the machine code compiled for it), then, without pytest arguments, the
#       Triton kernel tests under the oldest and the newest triton supported, 3.6.0 and 3.9.0
#       (scripts/triton_compat.sh; pyproject.toml states the range), the newest also compiling
#       kernels for sm_90
#
# The first samples the long parametrisations (every cell, dtype, tier and size still runs;
# tests/support/sampling.py prints what it left out) and the second runs the cases it left out,
# so the two hold every case between them; the gates compile a representative subset; `--full`
# runs every case. tests/support/tiers.py prints what each run left to the other command.
# Without a GPU the first builds fusedrnn._C as PTX only (scripts/setup_env.sh), the second
# with sm_90 machine code, which its checks read.
set -euo pipefail
cd "$(dirname "$0")/.."
gates=0
while [ $# -gt 0 ]; do
    case "$1" in
        --full) export FUSEDRNN_FULL_TESTS=1; shift ;;
        --gates) gates=1; export FUSEDRNN_NEEDS_SASS=1; shift ;;  # the gates read fusedrnn._C's sm_90 code
        *) break ;;
    esac
done
. scripts/setup_env.sh
if [ "$gates" = 0 ]; then
    # --cpu-durations: the slowest files and tests by CPU time at the end, every test's in build/
    exec python -m pytest -q -n 2 --dist loadfile --cpu-durations=10 tests tools/tests "$@"
fi
if [ $# -gt 0 ]; then
    exec python -m pytest -q --gates tests tools/tests "$@"
fi
if [ -z "${FUSEDRNN_FULL_TESTS:-}" ]; then  # (a full first command ran them all)
    # the behaviour tests' cases the first command's sample left out, in two processes as there
    python -m pytest -q -n 2 --dist loadfile --gates -m "not gate" tests tools/tests
fi
python -m pytest -q --gates -m gate tests tools/tests  # in one process: they share build/compile_check
bash scripts/triton_compat.sh 3.6.0
COMPILE_GATE=1 bash scripts/triton_compat.sh 3.9.0
