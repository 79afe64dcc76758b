#!/usr/bin/env bash
# The Triton kernel tests (tests/test_triton_*.py, CPU interpreter) under another Triton
# release than the pinned one (requirements-dev.txt: 3.7.1, torch 2.13's). scripts/test.sh
# runs it after the suite for both ends of the supported range (pyproject.toml): 3.6.0, the
# GPU machine's (torch 2.10 and 2.11 pin it), and 3.9.0, the newest release, which a plain
# `pip install` beside a CPU torch resolves to. The release goes into a folder of the venv
# put ahead on PYTHONPATH, nothing else changes.
# With COMPILE_GATE=1 it then compiles the LSTM's bf16 kernels at the anchor shapes for sm_90
# under that release (tools.compile_check; no GPU needed), failing on any flagged row.
#   [COMPILE_GATE=1] bash scripts/triton_compat.sh [VERSION] [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_env.sh
version="${1:-3.6.0}"
shift $(( $# > 0 ? 1 : 0 ))
overlay="$VENV/overlays/triton-$version"
if [ ! -f "$overlay/.complete" ]; then
    rm -rf "$overlay"
    python -m pip install -q --no-deps --target "$overlay" "triton==$version"
    touch "$overlay/.complete"
fi
export PYTHONPATH="$overlay${PYTHONPATH:+:$PYTHONPATH}"
got="$(python -c 'import triton; print(triton.__version__)')"
if [ "$got" != "$version" ]; then
    echo "triton_compat: asked for triton $version, imported $got" >&2
    exit 1
fi
echo "== the Triton kernel tests under triton $got"
python -m pytest -q tests/test_triton_*.py "$@"
if [ "${COMPILE_GATE:-0}" = 1 ]; then
    echo "== the LSTM's bf16 kernels at the anchors compile for sm_90 under triton $got"
    env -u TRITON_INTERPRET python -m tools.compile_check --backends triton --shapes anchors \
        --cells lstm --dtypes bf16 --quiet -j "$(nproc)"
fi
