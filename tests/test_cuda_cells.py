"""The per-cell pointwise headers (csrc/cells/*.cuh), compiled for the host into the C++
test module (tools/cuda_selftest, the `cxx_selftest` fixture), against torch float64 autograd of the reference step: forward values, the
values saved for backward, and every gradient the backward kernel produces."""
import math

import pytest
import torch

from fusedrnn.ops import reference


@pytest.fixture(scope="module")
def C(cxx_selftest):
    """The host build of the cell headers (cell_forward, cell_backward)."""
    return cxx_selftest

G = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def ref_step(cell, gx, gh, h_prev, c_prev):
    """(h, c) of one unit (B=1, H=1) with gates gx + gh: W_hh is zero and b_hh = gh, so
    dL/dh_prev from autograd is exactly the cell's local part (the W_hh part is the matvec's)."""
    w = torch.zeros(G[cell], 1, dtype=torch.float64)
    if cell == "lstm":
        return reference.lstm_step(gx[None], h_prev.view(1, 1), c_prev.view(1, 1), w, gh)
    if cell == "gru":
        return reference.gru_step(gx[None], h_prev.view(1, 1), w, gh), None
    return reference.rnn_step(gx[None], h_prev.view(1, 1), w, gh, relu=cell == "rnn_relu"), None


def cases(cell, n=60, seed=0):
    g = torch.Generator().manual_seed(seed + G[cell])
    for k in range(n):
        scale = 0.5 if k % 3 == 0 else (3.0 if k % 3 == 1 else 12.0)  # saturating gates too
        vals = (torch.randn(2 * G[cell] + 4, generator=g) * scale).tolist()
        yield [float(torch.tensor(v, dtype=torch.float32)) for v in vals]  # exactly representable in fp32


def close(a, b, what, scale=1.0, rtol=2e-5):
    """fp32 against float64: relative 2e-5, absolute 1e-6 × the size of the inputs. Saturated
    gates lose digits in σ' = f(1-f) and tanh' = 1-h² computed from fp32 activations (as in
    torch's own fp32 backward), which is absolute error ~eps·|dh|·|c|, not a formula bug."""
    assert math.isclose(a, b, rel_tol=rtol, abs_tol=1e-6 * scale), f"{what}: kernel {a!r} vs reference {b!r}"


@pytest.mark.parametrize("cell", list(G))
def test_cell_forward_and_backward_match_autograd(C, cell):
    n = G[cell]
    for vals in cases(cell):
        gx_l, gh_l = vals[:n], vals[n:2 * n]
        h_prev, c_prev, dh, dc = vals[2 * n:2 * n + 4]
        if cell != "lstm":
            dc = 0.0
        h, c, save = C.cell_forward(cell, gx_l, gh_l, h_prev, c_prev)
        d_gx, d_gh, dh_local, dc_prev = C.cell_backward(cell, save, dh, dc)

        gx = torch.tensor(gx_l, dtype=torch.float64, requires_grad=True)
        gh = torch.tensor(gh_l, dtype=torch.float64, requires_grad=True)
        hp = torch.tensor(h_prev, dtype=torch.float64, requires_grad=True)
        cp = torch.tensor(c_prev, dtype=torch.float64, requires_grad=True)
        h_ref, c_ref = ref_step(cell, gx, gh, hp, cp)
        loss = h_ref.sum() * dh + (c_ref.sum() * dc if c_ref is not None else 0.0)
        loss.backward()
        sc = (1 + abs(dh) + abs(dc)) * (1 + abs(h_prev) + abs(c_prev))

        close(h, h_ref.item(), f"{cell} h {vals}", 1 + abs(h_prev) + abs(c_prev))
        if cell == "lstm":
            close(c, c_ref.item(), f"{cell} c {vals}", 1 + abs(c_prev))
        for k in range(n):
            close(d_gx[k], gx.grad[k].item(), f"{cell} d_gx[{k}] {vals}", sc)
            close(d_gh[k], gh.grad[k].item(), f"{cell} d_gh[{k}] {vals}", sc)
        close(dh_local, hp.grad.item(), f"{cell} dh_prev (local part) {vals}", sc)
        if cell == "lstm":
            close(dc_prev, cp.grad.item(), f"{cell} dc_prev {vals}", sc)


def test_saved_values_are_what_backward_reads(C):
    """The save layout that forward writes and backward reads: LSTM i,f,g,o,c_prev; GRU
    r,z,n,gh_n,h_prev; RNN h."""
    h, c, save = C.cell_forward("lstm", [0.0, 0.0, 0.0, 0.0], [0.0] * 4, 0.25, -0.5)
    assert save == [0.5, 0.5, 0.0, 0.5, -0.5] and c == -0.25
    h, c, save = C.cell_forward("gru", [0.0, 0.0, 0.3], [0.0, 0.0, 0.7], 0.25, 0.0)
    assert save[:2] == [0.5, 0.5] and save[3] == pytest.approx(0.7) and save[4] == 0.25
    assert save[2] == pytest.approx(math.tanh(0.3 + 0.5 * 0.7), rel=1e-6)
    h, c, save = C.cell_forward("rnn_relu", [-1.0], [0.5], 0.0, 0.0)
    assert h == 0.0 and save == [0.0]
    d_gx, d_gh, dl, dcp = C.cell_backward("rnn_relu", [0.0], 1.0, 0.0)
    assert d_gx == [0.0]  # relu'(a) = 0 at a <= 0, as torch


def test_gru_n_gate_gradient_differs_between_gx_and_gh(C):
    h, c, save = C.cell_forward("gru", [0.1, -0.2, 0.3], [0.4, 0.5, -0.6], 0.7, 0.0)
    d_gx, d_gh, dl, dcp = C.cell_backward("gru", save, 1.0, 0.0)
    r = save[0]
    assert d_gx[:2] == d_gh[:2]
    assert d_gh[2] == pytest.approx(r * d_gx[2], rel=1e-6) and d_gh[2] != d_gx[2]


def test_cell_entry_points_reject_bad_sizes(C):
    with pytest.raises(ValueError, match="need 4 values"):
        C.cell_forward("lstm", [0.0] * 3, [0.0] * 4, 0.0, 0.0)
    with pytest.raises(ValueError, match="save needs 5"):
        C.cell_backward("gru", [0.0] * 4, 0.0, 0.0)
    with pytest.raises(ValueError, match="unknown cell"):
        C.cell_forward("lstmx", [0.0], [0.0], 0.0, 0.0)


@pytest.mark.parametrize("cell", list(G))
def test_nan_in_gates_propagates_like_torch(C, cell):
    """A NaN pre-activation gives a NaN state, as torch.relu/tanh/sigmoid do (relu included)."""
    n = G[cell]
    h, c, _ = C.cell_forward(cell, [math.nan] * n, [0.0] * n, 0.5, 0.5)
    assert math.isnan(h)
