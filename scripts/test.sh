#!/usr/bin/env bash
# The test command of the README: sets up .venv, then runs the CPU test suite (Triton kernels
# through TRITON_INTERPRET=1 under the pinned triton; tests/gpu skip without a CUDA device).
# Without arguments the Triton kernel tests then run again under the oldest and the newest
# triton supported, 3.6.0 and 3.9.0 (scripts/triton_compat.sh; pyproject.toml states the
# range), and the newest compiles kernels for sm_90; with arguments, only
# `pytest tests tools/tests ARGS` runs.
#
# The default run samples the long parametrisations (every cell, dtype, tier and size still
# runs; tests/support/sampling.py prints what it left out) and compiles a representative
# subset for the compile gates. `--full` runs every case (CI runs the default):
#   bash scripts/test.sh [--full] [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--full" ]; then
    export FUSEDRNN_FULL_TESTS=1
    shift
fi
. scripts/setup_env.sh
if [ $# -gt 0 ]; then
    exec python -m pytest -q tests tools/tests "$@"
fi
python -m pytest -q tests tools/tests
bash scripts/triton_compat.sh 3.6.0
COMPILE_GATE=1 bash scripts/triton_compat.sh 3.9.0
