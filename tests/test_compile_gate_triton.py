"""The compile gate on the CI shape set for the Triton backend (issue 11): every kernel the
library would launch on an H100 at the anchors and a few edge shapes, in every cell and
dtype, forward and backward, compiles for sm_90, fits (no FAIL, SMEM or CORES), uses
tensor cores, and has no register spill in 16-bit at an anchor; the fused decode step of every
cell at the decoder's sizes included.

Runs `python -m tools.compile_check` in a subprocess without TRITON_INTERPRET (the
interpreter cannot compile). The full run (FUSEDRNN_FULL_TESTS=1, CI) compiles every cell in
every dtype at every CI shape, ~150 kernels; the default run compiles `--sample`, one
(cell, dtype) per shape rotating through both, so each shape, cell, dtype, the two
directions, the projection and the decode step are still compiled. Triton's cache
(~/.triton/cache, TRITON_CACHE_DIR) makes a rerun take seconds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.sampling import full_run
from tools.compile_check.cases import ANCHORS, CELLS, CI_EXTRA, DTYPES, TRITON_ONLY_CELLS
from tools.compile_check.triton_rows import EXTRA
from tools.compile_check.triton_rows import STEP_CASES

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.gate  # `bash scripts/test.sh --gates` (tests/support/tiers.py)


def test_triton_kernels_compile_and_fit_at_the_ci_shapes(tmp_path):
    out = tmp_path / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    full = full_run()
    proc = subprocess.run([sys.executable, "-m", "tools.compile_check", "--backends", "triton", "--shapes", "ci",
                           *(() if full else ("--sample",)),
                           "--quiet", "--json", str(out), "-j", str(min(4, os.cpu_count() or 1))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = json.loads(out.read_text())["rows"]
    if full:
        # contract v2 (triton_rows.variants): D2 at every anchor but the reset-before GRU's, the
        # LSTM's P = H/4 with D1 and D2, and triton_rows.EXTRA (the bidirectional encoder, a cta
        # projection, the regularised kernels) in each dtype
        cells = len(CELLS) + len(TRITON_ONLY_CELLS)
        per_dtype = (len(ANCHORS) + len(CI_EXTRA)) * cells + len(ANCHORS) * len(CELLS) + 2 * len(ANCHORS) + len(EXTRA)
        # and the fused decode step (direction "step") of every cell at STEP_CASES
        assert len(rows) == per_dtype * len(DTYPES) * 2 + len(STEP_CASES) * cells * len(DTYPES)
        assert {r["variant"] for r in rows if r["anchor"]} >= {"D1 zo+rd"}
        assert {r["variant"] for r in rows if r["cell"] == "lstm" and r["anchor"]} >= {"D1", "D2", "D1 P64", "D2 P256"}
    else:  # the sample: every shape, cell and dtype, both directions, D2 and the LSTM's projection
        base = [r for r in rows if r["direction"] != "step"]
        assert {(r["B"], r["H"]) for r in base} >= set(ANCHORS) | set(CI_EXTRA)
        assert {r["cell"] for r in base} == set(CELLS + TRITON_ONLY_CELLS) and {r["dtype"] for r in base} == set(DTYPES)
        assert {r["direction"] for r in base} == {"fwd", "bwd"}
        lstm = {r["variant"] for r in rows if r["cell"] == "lstm" and r["anchor"]}
        assert {"D1", "D2"} <= lstm and any(v.startswith("D1 P") for v in lstm) and any(v.startswith("D2 P") for v in lstm)
    steps = [r for r in rows if r["direction"] == "step"]
    assert {(r["B"], r["H"]) for r in steps} == {(B, H) for B, _, H, _ in STEP_CASES}
    assert all(r["kernel"] == "cell_step" for r in steps)
    assert any(r["layout"].startswith("cta") and "P8" in r["variant"] for r in rows)  # W_hr resident
    assert not [r for r in rows if r["error"]]
    spills = [(r["cell"], r["dtype"], r["B"], r["H"], r["direction"], r["spill_bytes"]) for r in rows
              if r["anchor"] and r["dtype"] != "fp32" and r["spill_bytes"]]
    assert not spills, f"16-bit anchor kernels spill: {spills}"
    assert all(r["tensor_cores"] in ("mma", "wgmma") for r in rows), "a kernel without tensor cores"
    for r in rows:  # every barrier grid fits the SMs at its occupancy
        if r["barrier"]:
            assert r["grid"][0] * r["grid"][1] * r["grid"][2] <= 132 * r["per_sm"], r
