"""The grid barrier's failure handling, on the CPU: a wait that times out is latched (later
steps do not wait again), the spin limit is a launch argument, a timeout becomes a
RuntimeError, barrier grids are launched cooperatively.

A timeout is provoked by forcing the grid layout in the ordinary interpreter, which runs
a launch's programs one after another: program 0 waits for programs that have not
started, gives up after `spin_limit` polls, and must then finish without waiting again.
"""
from __future__ import annotations

import pytest
import torch

from fusedrnn.ops import triton as tri
from fusedrnn.ops.triton import config
from support.triton_recurrence import make_args
from support.triton_barrier import grid_launch

pytestmark = pytest.mark.skipif(not config.INTERPRET, reason="provokes a timeout with sequential interpreter programs "
                                "(tests/gpu/test_triton_gpu.py checks timeouts on a GPU)")

SPIN = 1 << 10
T = 8


@pytest.fixture
def barrier_ops(monkeypatch):
    """Counts the barrier's memory operations the interpreted kernels execute: atomics
    (arrivals, acquires and polls — the interpreter reads an acquire as an atomic —, the timeout
    flag) and volatile loads."""
    from triton.runtime import interpreter
    count = {"n": 0}
    builder = interpreter.InterpreterBuilder
    orig_rmw, orig_masked = builder.create_atomic_rmw, builder.create_masked_load

    def counting(self, *args, **kwargs):
        count["n"] += 1
        return orig_rmw(self, *args, **kwargs)

    def masked(self, *args, **kwargs):  # create_load calls it; is_volatile comes last (its position varies by release)
        count["n"] += bool(kwargs["is_volatile"] if "is_volatile" in kwargs else args[-1])
        return orig_masked(self, *args, **kwargs)

    monkeypatch.setattr(builder, "create_atomic_rmw", counting)
    monkeypatch.setattr(builder, "create_masked_load", masked)
    return count


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_timeout_is_latched_and_raised(monkeypatch, barrier_ops, cell):
    launch = grid_launch(cell, 3, 20)
    monkeypatch.setattr(config, "choose", lambda *a, **k: launch)
    monkeypatch.setitem(config.TUNING, "spin_limit", SPIN)
    (gx, h0, c0, w, b), _ = make_args(cell, T, 3, 20, torch.float32, lengths=False, bias=True)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="grid barrier timed out in the .* forward"):
            tri.forward(cell, gx, h0, c0, w, b, None, False, True)
        # one full wait at most per program, then a few atomics per step: latched
        assert barrier_ops["n"] < launch.grid[0] * (SPIN + 4 * T), barrier_ops["n"]
        # the backward as well (saved tensors of the right shapes; values do not matter)
        saved = tuple(torch.zeros(s, dtype=d) for s, d in tri.saved_shapes(cell, gx, h0, c0, w, b, None, False, True))
        y = torch.zeros(T, 3, 20)
        dc = torch.zeros(3, 20) if cell == "lstm" else None
        barrier_ops["n"] = 0
        with pytest.raises(RuntimeError, match="grid barrier timed out in the .* backward"):
            tri.backward(cell, y, h0, dc, gx, h0, c0, w, b, None, False, y, saved)
        assert barrier_ops["n"] < launch.grid[0] * (SPIN + 4 * T), barrier_ops["n"]


def test_spin_limit_is_a_runtime_argument(monkeypatch, barrier_ops):
    """The kernel polls exactly as often as the launch argument says (no recompile)."""
    launch = grid_launch("rnn_tanh", 3, 20)
    monkeypatch.setattr(config, "choose", lambda *a, **k: launch)
    (gx, h0, c0, w, b), _ = make_args("rnn_tanh", 1, 3, 20, torch.float32, lengths=False, bias=False)
    counts = []
    for spin in (SPIN, 4 * SPIN):
        monkeypatch.setitem(config.TUNING, "spin_limit", spin)
        barrier_ops["n"] = 0
        with torch.no_grad(), pytest.raises(RuntimeError, match="timed out"):
            tri.forward("rnn_tanh", gx, h0, None, w, b, None, False, False)
        counts.append(barrier_ops["n"])
    # at T=1 programs 0..n-2 each wait out the limit (the last one finds everyone arrived)
    assert counts[1] - counts[0] == 3 * SPIN * (launch.grid[0] - 1)
    for kernel in (tri.launch.kernels.recurrence_fwd_kernel, tri.launch.kernels.recurrence_bwd_kernel):
        jit_options = getattr(kernel, "kwargs", None) or {"do_not_specialize": kernel.do_not_specialize}
        assert "spin_limit" in jit_options["do_not_specialize"]  # a value change never recompiles


def test_barrier_grids_launch_cooperatively_with_tf32x3(monkeypatch):
    launch = grid_launch("lstm", 3, 20)
    solo = launch._replace(layout="solo", grid=(1, 1, 1))
    n = tri.launch.Sizes(4, 3, 20, 20, 1)
    for lau in (launch, solo):
        fwd = tri.launch.fwd_args("lstm", lau, *[None] * 12, n, False, True)[1]
        bwd = tri.launch.bwd_args("lstm", lau, *[None] * 12, n, False, True)[1]
        assert fwd["launch_cooperative_grid"] is lau.BARRIER and bwd["launch_cooperative_grid"] is lau.BARRIER
        assert fwd["PREC"] == bwd["PREC"] == "ieee"  # the interpreter: exact fp32 products
    monkeypatch.setattr(config, "INTERPRET", False)
    assert tri.launch.fwd_args("lstm", launch, *[None] * 12, n, False, True)[1]["PREC"] == "tf32x3"

