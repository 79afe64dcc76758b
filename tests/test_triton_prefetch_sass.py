"""The cta layout's step inputs are first read two steps after their load, in the compiled code
(sm_90 SASS, tests/support/triton_prefetch_probe.py in a subprocess: the interpreter cannot
compile). The step loop runs two steps per trip (unrolled by model.CTA_PREFETCH_AHEAD), so a
load read two steps later has more than one step's instructions, half the loop, between it
and its first reader (following the loop round its back edge). Loaded one step ahead, or
loaded two ahead but converted (or moved) before the back edge, as 16-bit values were, it is
read within the same step or the next: the warp waits for it a step early.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.gate  # `bash scripts/test.sh --gates` (tests/support/tiers.py)

#: cta kernels: gx (bf16) forward, dy with the saved activations and state backward, fp32 gx
ROWS = ("gru,bf16,8,128,fwd", "gru,bf16,8,128,bwd", "rnn_tanh,fp32,8,128,fwd", "rnn_tanh,bf16,1,256,bwd")


@pytest.fixture(scope="module")
def probes():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "triton_prefetch_probe.py"), *ROWS],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {d["spec"]: d for d in map(json.loads, proc.stdout.splitlines())}


#: rows whose two-step prefetch triton 3.9.0 compiles with a read inside the next step (#29)
SCHEDULED_EARLY_UNDER_3_9 = ("rnn_tanh,fp32,8,128,fwd", "rnn_tanh,bf16,1,256,bwd")


def _triton_version() -> tuple:
    import triton
    return tuple(int(p) for p in triton.__version__.split(".")[:2])


@pytest.mark.parametrize("row", ROWS)
def test_cta_inputs_are_first_read_two_steps_after_their_load(probes, row):
    d = probes[row]
    assert d["layout"] == "cta" and d["loads"], d
    early = [(addr, op, dist) for addr, op, dist in d["loads"] if dist <= d["body"] // 2]
    if early and row in SCHEDULED_EARLY_UNDER_3_9 and _triton_version() >= (3, 9):
        # a finding, not a pass: triton 3.9 places these rows' first reads of one input inside
        # the step after its load (seen 2026-12-07: 371 of 760 and 569-580 of 1444 instructions);
        # the kernels' values are unchanged, the step waits part of a load (#29)
        pytest.xfail(f"triton 3.9 reads {row}'s prefetched input within a step of its load: {early}")
    assert not early, f"{row}: loads read within a step of their issue (loop of {d['body']} instructions): {early}"
