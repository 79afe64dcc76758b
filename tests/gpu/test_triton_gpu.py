"""backend="triton" on a CUDA device: the barrier grid (several programs per batch tile,
one grid barrier per step) and the no-barrier grid, at small awkward sizes and at the
anchor shapes of ANCHORS.md, in float32/bfloat16/float16, against the float64 reference
(values and the gradients of gx, h0, c0, w_hh, b_hh).

Rule: each output/gradient's max error is at most twice the error of the reference run
in the same dtype (for float32 also at least 3e-5 relative to the tensor's scale, as
both sides then sit at fp32 rounding level). Debug mode is on: outputs start NaN-filled
and a timed-out grid barrier raises instead of returning garbage.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from fusedrnn.ops.common import GATES  # noqa: E402
from fusedrnn.ops.triton import config  # noqa: E402
from test_triton_recurrence import errors, make_args, run  # noqa: E402  (tests/ is on sys.path)

DEV = torch.device("cuda")
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: (B, T, H) from ANCHORS.md
ANCHORS = [(1, 1024, 256), (8, 512, 128), (16, 1024, 768), (64, 256, 1024), (256, 128, 512)]
#: (T, B, H, lengths, reverse): ragged sizes, masks everywhere, several batch tiles
AWKWARD = [(9, 3, 67, True, True), (5, 70, 200, False, False), (17, 1, 300, True, False),
           (4, 130, 45, False, True)]


@pytest.fixture(autouse=True)
def debug_mode(monkeypatch):
    monkeypatch.setattr(config, "DEBUG", True)


def check(cell, T, B, H, dtype, lengths, reverse, bias=True):
    args, lens = make_args(cell, T, B, H, dtype, lengths, bias, seed=T + B + H, device=DEV)
    if lens is not None:
        lens = lens.to(DEV)
    ours = run(cell, args, lens, reverse, "triton")
    truth = run(cell, args, lens, reverse, "reference", dtype=torch.float64)
    ref = errors(run(cell, args, lens, reverse, "reference", dtype=dtype), truth)
    err = errors(ours, truth)
    floor = 3e-5 if dtype == torch.float32 else 1e-6
    bound = {k: max(2.0 * ref[k], floor * (1.0 + truth[k].abs().max().item())) for k in truth}
    bad = {k: (err[k], bound[k]) for k in truth if not err[k] <= bound[k]}
    assert not bad, f"error above bound (err, bound): {bad}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T,B,H,lengths,reverse", AWKWARD)
def test_barrier_grid_small(cell, dtype, T, B, H, lengths, reverse):
    launch = config.choose(GATES[cell], B, H, dtype, DEV)
    assert launch.BARRIER and launch.grid[0] > 1
    check(cell, T, B, H, dtype, lengths, reverse)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T,B,H,lengths,reverse", AWKWARD)
def test_no_barrier_grid_small(monkeypatch, cell, dtype, T, B, H, lengths, reverse):
    monkeypatch.setitem(config.TUNING, "use_barrier", False)
    launch = config.choose(GATES[cell], B, H, dtype, DEV)
    assert not launch.BARRIER and launch.grid[0] == 1
    check(cell, T, B, H, dtype, lengths, reverse)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,T,H", ANCHORS)
def test_anchor_shapes(cell, dtype, B, T, H):
    check(cell, T, B, H, dtype, lengths=False, reverse=False)


@pytest.mark.parametrize("cell", CELLS)
def test_anchor_with_lengths_reverse(cell):
    check(cell, 512, 8, 128, torch.bfloat16, lengths=True, reverse=True)


def test_barrier_grid_is_co_resident():
    sms = torch.cuda.get_device_properties(DEV).multi_processor_count
    for B, T, H in ANCHORS:
        launch = config.choose(4, B, H, torch.bfloat16, DEV)
        assert launch.grid[0] * launch.grid[1] <= sms * config.TUNING["programs_per_sm"]
