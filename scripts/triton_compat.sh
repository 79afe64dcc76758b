#!/usr/bin/env bash
# The Triton kernel tests (tests/test_triton_*.py, CPU interpreter) under another Triton
# release than the pinned one (requirements-dev.txt: 3.7.1, torch 2.13's), the PTX check among
# them. `scripts/test.sh --gates` runs it after the compile gates for both ends of the
# supported range (pyproject.toml): 3.6.0, the
# GPU machine's (torch 2.10 and 2.11 pin it), and 3.9.0, the newest release, which a plain
# `pip install` beside a CPU torch resolves to. The release goes into a folder of the venv
# put ahead on PYTHONPATH, nothing else changes.
# With COMPILE_GATE=1 it then compiles kernels at the anchor shapes for sm_90 under that
# release (tools.compile_check; no GPU needed), failing on any flagged row: with
# FUSEDRNN_FULL_TESTS=1 (scripts/test.sh --gates --full) the LSTM's bf16 kernels, else a sample
# of one (cell, dtype) per anchor, rotating, so that every cell and dtype is compiled. The
# Triton tests sample their long parametrisations the same way (tests/support/sampling.py).
#   [COMPILE_GATE=1] [FUSEDRNN_FULL_TESTS=1] bash scripts/triton_compat.sh [VERSION] [pytest arguments]
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
python -m pytest -q --all-tiers tests/test_triton_*.py "$@"  # the PTX check (a gate) too
if [ "${COMPILE_GATE:-0}" = 1 ]; then
    if [ "${FUSEDRNN_FULL_TESTS:-0}" = 1 ]; then
        echo "== the LSTM's bf16 kernels at the anchors compile for sm_90 under triton $got"
        which=(--cells lstm --dtypes bf16)
    else
        echo "== a sample of the kernels at the anchors (one cell and dtype each) compiles for sm_90 under triton $got"
        which=(--sample)
    fi
    env -u TRITON_INTERPRET python -m tools.compile_check --backends triton --shapes anchors \
        "${which[@]}" --quiet -j "$(nproc)"
fi
