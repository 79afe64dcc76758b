"""Contract v2 at the backend level, part 2: both directions in one launch (D = 2) in the
Triton kernels, against two float64 reference runs (direction 1 reversed) — values and
every gradient, every cell, with and without the LSTM projection, in fp32/bf16/fp16 with
lengths (shared by both directions), batch tails and odd H; in the layouts the choice
picks here (cta, solo), in the barrier grid (programs in threads, both directions'
groups meeting at their own counters), and as two launches in turn (the fallback).
"""
from __future__ import annotations

import pytest
import torch

from fusedrnn.ops import triton as tri
from fusedrnn.ops.triton import config
from support.triton_projection import check_v2, forced, make_v2_args, structures

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


#: (cell, T, B, H, P, lengths, dtype): each cell in each dtype once (plus projections)
CASES = [(cell, 5 + i, (3, 1, 4)[(i + j) % 3], (9, 16, 13)[j % 3], None, (i + j) % 2 == 0, dtype)
         for j, cell in enumerate(CELLS) for i, dtype in enumerate(DTYPES)]
CASES += [("lstm", 6, 3, 17, 5, True, torch.float32), ("lstm", 1, 2, 12, 3, False, torch.bfloat16),
          ("lstm", 4, 3, 9, 8, True, torch.float16)]


def case_id(c):
    cell, T, B, H, P, lengths, dtype = c
    return f"{cell}-T{T}-B{B}-H{H}" + (f"-P{P}" if P else "") + ("-len" if lengths else "") + f"-{str(dtype)[6:]}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_two_directions_match_reference(case):
    cell, T, B, H, P, lengths, dtype = case
    launch = config.choose(cell, B, H, dtype, config.device_limits(torch.device("cpu")), "fwd", proj=P or 0,
                           directions=2)
    assert launch.grid[2] == 2 and launch.launches == 1  # one launch, a program group per direction
    check_v2(cell, T, B, H, P, 2, dtype, lengths, seed=T + B + H)


#: 8 SMs: two batch tiles of both directions' groups of 2 programs each are co-resident
DEVICE_8 = config.DeviceLimits(8, 227 * 1024, 65536)


def _grid_pair(cell, P):
    """A barrier-grid forward and backward with both directions in the launch (several batch tiles)."""
    fwd = structures(cell, 20, 40, P, 2, torch.bfloat16, "fwd", DEVICE_8)
    bwd = structures(cell, 20, 40, P, 2, torch.bfloat16, "bwd", DEVICE_8)
    f = fwd.get("grid-streamed-tile-batch-tiles") or fwd["grid-resident-tile-batch-tiles"]
    b = bwd.get("grid-streamed-tiles-batch-tiles") or bwd["grid-streamed-tile-batch-tiles"]
    return f, b


GRID = [(cell, None) for cell in CELLS] + [("lstm", 9)]


@pytest.mark.parametrize("cell,P", GRID, ids=[f"{c}-P{p}" if p else c for c, p in GRID])
def test_two_directions_in_the_barrier_grid(monkeypatch, cell, P):
    fwd, bwd = _grid_pair(cell, P)
    for lau in (fwd, bwd):  # both groups co-resident on the device the plan is for
        assert lau.BARRIER and lau.grid[1] > 1 and lau.grid[2] == 2
        assert lau.grid[0] * lau.grid[1] * lau.grid[2] <= DEVICE_8.sms
    with forced(monkeypatch, fwd, bwd):
        check_v2(cell, 5, 20, 40, P, 2, torch.float32 if cell != "gru" else torch.float16, lengths=True, seed=7)


@pytest.mark.parametrize("cell,P", [("lstm", 6), ("gru", None)])
def test_two_directions_in_turn(monkeypatch, cell, P):
    """The fallback: each direction its own launch (grid axis 2 of size 1, FLAG_DIR1 on the
    second), writing its half of the shared outputs."""
    f = config.choose(cell, 3, 17, torch.float32, DEVICE_8, "fwd", "solo", proj=P or 0, directions=2)
    b = config.choose(cell, 3, 17, torch.float32, DEVICE_8, "bwd", "solo", proj=P or 0, directions=2)
    f, b = f._replace(grid=f.grid[:2] + (1,)), b._replace(grid=b.grid[:2] + (1,))
    assert f.launches == b.launches == 2
    with forced(monkeypatch, f, b):
        check_v2(cell, 6, 3, 17, P, 2, torch.bfloat16, lengths=True, seed=3)


def test_two_directions_refuse_reverse_and_bad_shapes():
    args, _ = make_v2_args("gru", 3, 2, 8, None, 2, torch.float32, False, True)
    a = dict(args)
    with pytest.raises(RuntimeError, match="reverse"):
        tri.forward("gru", a["gx"], a["h0"], None, a["w_hh"], a["b_hh"], None, True, False)
    with pytest.raises(RuntimeError, match="b_hh has shape"):
        tri.forward("gru", a["gx"], a["h0"], None, a["w_hh"], a["b_hh"][0], None, False, False)
    with pytest.raises(RuntimeError, match="gx has 40 columns"):
        tri.forward("gru", a["gx"][..., :40].contiguous(), a["h0"], None, a["w_hh"], a["b_hh"], None, False, False)
    three = torch.zeros(3, 2, 8)
    with pytest.raises(RuntimeError, match="1 or 2 directions"):
        tri.forward("gru", torch.zeros(3, 2, 72), three, None, torch.zeros(3, 24, 8), None, None, False, False)
