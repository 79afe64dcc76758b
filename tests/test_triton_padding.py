"""Padded steps (t >= lengths[b]) contribute exactly nothing, forward and backward, in
every cell and layout: a NaN/inf in a padded step's gx or dy, or an inf in the initial
state of another sequence, changes nothing the kernels produce for the other rows, and
every padded position of y and of the gate gradients is exactly zero. Also: the
launchers refuse non-contiguous tensors instead of reading raw memory."""
from __future__ import annotations

import pytest
import torch

from fusedrnn.ops import triton as tri
from fusedrnn.ops.triton import config
from support.triton_recurrence import DEVICE, make_args

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
T, B, H = 6, 3, 17
LENGTHS = torch.tensor([6, 2, 4], dtype=torch.int32)
POISONED = 1  # the row whose h0/c0 is inf


def run_kernels(cell, gx, h0, c0, w, b, lens, reverse, dy, dhT, dcT):
    with torch.no_grad():
        y, hT, cT, saved = tri.forward(cell, gx, h0, c0, w, b, lens, reverse, True)
        d_gx, d_gh, dh0, dc0 = tri.backward(cell, dy, dhT, dcT, gx, h0, c0, w, b, lens, reverse, y, saved)
    return {"y": y, "hT": hT, "cT": cT, "d_gx": d_gx, "d_gh": d_gh, "dh0": dh0, "dc0": dc0}


@pytest.mark.parametrize("cell,layout,reverse", [(c, lay, (i + j) % 2 == 1) for i, c in enumerate(CELLS)
                                                 for j, lay in enumerate(("cta", "solo"))])
def test_padded_steps_change_nothing(monkeypatch, cell, layout, reverse):
    monkeypatch.setitem(config.TUNING, "layout", layout)
    (gx, h0, c0, w, b), _ = make_args(cell, T, B, H, torch.float32, lengths=False, bias=True, seed=5)
    gx, h0, w, b = gx.detach(), h0.detach(), w.detach(), b.detach()
    c0 = c0.detach() if c0 is not None else None
    lens = LENGTHS.to(DEVICE)
    g = torch.Generator().manual_seed(6)
    dy = torch.randn(T, B, H, generator=g).to(DEVICE)
    dhT = torch.randn(B, H, generator=g).to(DEVICE)
    dcT = torch.randn(B, H, generator=g).to(DEVICE) if cell == "lstm" else None
    clean = run_kernels(cell, gx, h0, c0, w, b, lens, reverse, dy, dhT, dcT)

    padded = torch.arange(T, device=DEVICE)[:, None] >= lens[None, :]  # (T, B)
    gx2, dy2, h02 = gx.clone(), dy.clone(), h0.clone()
    gx2[padded] = float("nan")
    gx2[padded.nonzero()[:1].unbind(1)] = float("inf")
    dy2[padded] = float("nan")
    h02[POISONED] = float("inf")
    c02 = None
    if c0 is not None:
        c02 = c0.clone()
        c02[POISONED] = float("-inf")
    dirty = run_kernels(cell, gx2, h02, c02, w, b, lens, reverse, dy2, dhT, dcT)

    keep = [r for r in range(B) if r != POISONED]
    for name, ref in clean.items():
        if ref is None:
            continue
        got = dirty[name]
        if name in ("y", "d_gx", "d_gh"):
            assert (got[padded] == 0).all(), f"{name}: a padded position is not exactly zero"
            ref, got = ref[:, keep], got[:, keep]
        else:
            ref, got = ref[keep], got[keep]
        assert torch.equal(got, ref), f"{name} changed for the other rows (max diff {(got - ref).abs().max()})"


def test_non_contiguous_inputs_are_refused():
    (gx, h0, c0, w, b), _ = make_args("lstm", 4, 3, 8, torch.float32, lengths=False, bias=True)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="gx must be contiguous"):
            tri.forward("lstm", gx.transpose(0, 1).contiguous().transpose(0, 1), h0, c0, w, b, None, False, False)
        with pytest.raises(RuntimeError, match="w_hh must be contiguous"):
            tri.forward("lstm", gx, h0, c0, w.t().contiguous().t(), b, None, False, False)
        y, hT, cT, saved = tri.forward("lstm", gx, h0, c0, w, b, None, False, True)
        dy = torch.zeros(3, 4, 8).transpose(0, 1)
        with pytest.raises(RuntimeError, match="dy must be contiguous"):
            tri.backward("lstm", dy, hT, cT, gx, h0, c0, w, b, None, False, y, saved)


@pytest.mark.parametrize("layout", ["cta", "solo"])
def test_infinite_initial_state_saturates_like_the_reference(monkeypatch, layout):
    """An inf in h0 makes tanh saturate to ±1 at the first step, as in torch.nn; the state
    is finite afterwards. The units past H of the carried tile must not turn it into NaN
    (0 x inf from a masked W row, then the NaN fed back into the next product). float32:
    in 16-bit the hi/lo split of the state makes an infinite h NaN within its own row
    (documented in docs/triton.md)."""
    monkeypatch.setitem(config.TUNING, "layout", layout)
    g = torch.Generator().manual_seed(3)
    Tn, Bn, Hn = 3, 2, 5  # H below the tile width: the carried tile has units past H
    gx = torch.randn(Tn, Bn, Hn, generator=g) * 0.5
    h0 = torch.randn(Bn, Hn, generator=g) * 0.5
    h0[1, 0] = float("inf")
    w = torch.randn(Hn, Hn, generator=g) * 0.5
    with torch.no_grad():
        y, _, _, _ = tri.forward("rnn_tanh", gx.to(DEVICE), h0.to(DEVICE), None, w.to(DEVICE), None, None,
                                 False, False)
    h, want = h0.double(), []
    for t in range(Tn):  # torch.nn's tanh cell in float64
        h = torch.tanh(gx[t].double() + h @ w.double().t())
        want.append(h)
    want = torch.stack(want)
    assert bool(want.isfinite().all())
    assert bool(y.isfinite().all()), y
    torch.testing.assert_close(y.double().cpu(), want, atol=1e-5, rtol=1e-5)
