#!/usr/bin/env bash
# The main job of the README: the benchmark suite against cuDNN (on a machine
# without a GPU it says so and runs its CPU default).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_env.sh
python -m benchmarks.run "$@"
