#!/usr/bin/env bash
# The test command of the README: sets up .venv, then runs the CPU test suite
# (Triton kernels through TRITON_INTERPRET=1; tests/gpu skip without a CUDA device).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_env.sh
python -m pytest -q tests "$@"
