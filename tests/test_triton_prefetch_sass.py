"""The cta layout's step inputs have arrived when they are first read, in the compiled code
(sm_90 SASS, tests/support/triton_prefetch_probe.py in a subprocess: the interpreter cannot
compile). The step loop runs two steps per trip (unrolled by model.CTA_PREFETCH_AHEAD) and each
step loads the inputs of the step two ahead, so between a load and its first reader (following
the loop round its back edge) lies about one step of instructions. The check is the machine
model's own (fusedrnn/machine.py): issuing those instructions takes at least one L2 latency, so
the reader does not wait. Loaded one step ahead, or loaded two ahead but converted (or moved)
before the back edge, as 16-bit values were, the reader sits a few instructions after its
load and waits for it.

Until 2026-12-07 the check was "more than half the loop between them". Triton 3.9 splits the
unrolled trip unequally (the fp32 RNN forward: 419 and 341 instructions), so a load issued at
the very end of step s and read at the very start of step s+2, the schedule intended, sat 371
instructions before its reader in a loop of 760 and failed it; by the model those 371
instructions take 0.42 µs against an L2 latency of 0.35 µs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusedrnn.ops.triton import tiles

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


def _no_wait_distance(warps: int) -> int:
    """The fewest instructions whose issue (machine.issue_us, `warps` warps) covers one L2 latency."""
    from fusedrnn import machine
    m = machine.DEFAULTS
    n = 1
    while machine.issue_us(m, n, warps) < m["l2_latency_us"]:
        n += 1
    return n


def test_the_distance_is_a_third_of_a_microsecond_of_issue():
    """With the model's H100 constants (0.5 instructions per cycle, 1.755 GHz, 0.35 µs): 1 warp or 8 alike."""
    assert _no_wait_distance(1) == _no_wait_distance(8) == 308


#: where Triton compiles the cta products as batched products of one (3.9 on, tiles.BATCH_ONE_DOT:
#: mma.sync through tiles.dot2) ptxas gives the RNN backward's held dy of one buffer a register
#: of the other and copies it at the loop's back edge (IMAD.MOV, 140 instructions after its
#: load): the copy waits for the load
MOVED_UNDER_3_9 = pytest.mark.xfail(bool(tiles.BATCH_ONE_DOT), strict=True,
                                    reason="triton 3.9: dy moved between the buffers' registers at the back edge")


@pytest.mark.parametrize("row", [pytest.param(r, marks=[MOVED_UNDER_3_9] if r == "rnn_tanh,bf16,1,256,bwd" else [])
                                 for r in ROWS])
def test_cta_inputs_have_arrived_when_first_read(probes, row):
    d = probes[row]
    assert d["layout"] == "cta" and d["loads"], d
    need = _no_wait_distance(d["warps"])
    early = [(addr, op, dist) for addr, op, dist in d["loads"] if dist < need]
    assert not early, (f"{row}: loads read before one L2 latency of issue ({need} instructions) in a loop of "
                       f"{d['body']}: {early}")


@pytest.mark.parametrize("row", [r for r in ROWS if ",fp32," not in r])
def test_16_bit_cta_products_use_mma_sync_under_every_triton(probes, row):
    """The batch side of these products is 8 rows: Triton 3.6 and 3.7 compile them to
    mma.sync, 3.9 to wgmma unless given as a batched product of one (tiles.dot2), and its
    wgmma chain doubled the step (the bf16 B1·H256 RNN backward: 722 instructions per step
    against 293.5, 255 registers and a spill)."""
    assert probes[row]["tc"] == "mma", probes[row]
