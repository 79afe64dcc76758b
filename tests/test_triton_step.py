"""The Triton backend's fused decode step (fusedrnn.ops.triton.step, step_kernel.py) in the
interpreter: every cell and dtype at awkward sizes, with and without biases, against the
float64 reference step; its argument errors; and the cells' and modules' decode path
(no autograd) using it in one launch per step, against torch.nn. On a GPU:
tests/gpu/test_triton_gpu.py (tf32x3, tensor cores, graph capture)."""
from __future__ import annotations

import pytest
import torch

import fusedrnn
from fusedrnn.ops import triton as tri
from fusedrnn.ops.common import GATES
from fusedrnn.ops.triton import launch, step_launch
from support.triton_recurrence import DEVICE
from support.triton_step import reference_step, step_args

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: B, I, H: one unit, odd sizes, and contractions over several chunks with a masked tail
#: (H 33 in fp32's 32-wide chunks, I 130 in 16-bit's 128-wide ones)
SIZES = [(1, 5, 1), (3, 5, 7), (3, 5, 33), (1, 130, 3)]


@pytest.fixture(autouse=True)
def debug_mode(monkeypatch):
    """Outputs start NaN-filled: an element the kernel does not write fails the comparison."""
    monkeypatch.setenv("FUSEDRNN_CHECK", "1")  # NaN-filled outputs: an unwritten element fails


@pytest.mark.sampled
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("B,I,H", SIZES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("cell", CELLS)
def test_step_matches_the_float64_reference(cell, dtype, B, I, H, bias):
    """The Triton test rule (test_triton_recurrence.check_against_reference): fp32 within
    3e-5 of the scale; 16-bit no worse than twice the reference's own error in the dtype."""
    args = step_args(cell, B, I, H, dtype, bias, seed=B * 100 + H)
    with torch.no_grad():
        h, c = tri.step(cell, *args)
        truth = reference_step(cell, args, torch.float64)
        low = reference_step(cell, args, dtype) if dtype != torch.float32 else None
    got = [h.double()] + ([c.double()] if cell == "lstm" else [])
    assert c is None if cell != "lstm" else c.dtype == dtype
    assert h.dtype == dtype and h.shape == (B, H)
    for k, (a, want) in enumerate(zip(got, truth)):
        scale = 1.0 + want.abs().max().item()
        bound = 3e-5 * scale if low is None else 2.0 * (low[k] - want).abs().max().item() + 1e-6 * scale
        err = (a - want).abs().max().item()
        assert err <= bound, (k, err, bound)  # NaN (an unwritten element) fails too


def test_one_bias_alone_and_strided_arguments():
    """b_ih without b_hh (and the reverse), and non-contiguous inputs, as the contract allows."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = step_args("gru", 3, 5, 7, torch.float32)
    for bi, bh in ((b_ih, None), (None, b_hh)):
        got = tri.step("gru", x, h0, None, w_ih, w_hh, bi, bh)[0]
        want = reference_step("gru", (x, h0, None, w_ih, w_hh, bi, bh), torch.float64)[0]
        torch.testing.assert_close(got.double(), want, rtol=0, atol=3e-5 * (1 + want.abs().max().item()))
    wide = torch.cat([x, x], 1)[:, ::2]  # (3, 5), stride 10·2
    assert not wide.is_contiguous()
    torch.testing.assert_close(tri.step("gru", wide, h0, None, w_ih, w_hh, b_ih, b_hh)[0],
                               tri.step("gru", wide.contiguous(), h0, None, w_ih, w_hh, b_ih, b_hh)[0], rtol=0, atol=0)


def test_step_errors_name_the_bad_argument():
    """The same exception types and messages as the cuda backend's step."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = step_args("lstm", 3, 5, 7, torch.float32)
    with pytest.raises(ValueError, match=r"step: w_hh must have shape \(28, 7\), got \(28, 6\)"):
        tri.step("lstm", x, h0, c0, w_ih, w_hh[:, :6], b_ih, b_hh)
    with pytest.raises(ValueError, match=r"step: c0 must have shape \(3, 7\), got None"):
        tri.step("lstm", x, h0, None, w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="c0 must be None for cell 'gru'"):
        tri.step("gru", x, h0, c0, w_ih[:21], w_hh[:21], None, None)
    with pytest.raises(ValueError, match=r"step: b_ih must have shape \(28,\), got \(27,\)"):
        tri.step("lstm", x, h0, c0, w_ih, w_hh, b_ih[:27], b_hh)
    with pytest.raises(TypeError, match="step: w_ih has dtype torch.float16 but x has torch.float32"):
        tri.step("lstm", x, h0, c0, w_ih.half(), w_hh, b_ih, b_hh)
    d = [a.double() for a in (x, h0, c0, w_ih, w_hh, b_ih, b_hh)]
    with pytest.raises(TypeError, match="float32, bfloat16 or float16, not torch.float64"):
        tri.step("lstm", *d)


def test_an_empty_batch_and_an_empty_input():
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = step_args("lstm", 0, 5, 7, torch.float32)
    h, c = tri.step("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    assert h.shape == c.shape == (0, 7)
    x, h0, _, w_ih, w_hh, b_ih, b_hh = step_args("gru", 2, 0, 7, torch.float32)  # I = 0: x W_ihᵀ = 0
    want = reference_step("gru", (x, h0, None, w_ih, w_hh, b_ih, b_hh), torch.float64)[0]
    torch.testing.assert_close(tri.step("gru", x, h0, None, w_ih, w_hh, b_ih, b_hh)[0].double(), want, rtol=0,
                               atol=3e-5 * (1 + want.abs().max().item()))


def test_int32_offsets_are_checked_before_launch():
    big = torch.empty(1, 1 << 16).expand(1 << 15, -1)  # B*I = 2^31 elements, no memory behind it
    with pytest.raises(ValueError, match=r"B\*I \(x\) = 2147483648 elements exceeds"):
        tri.step("rnn_tanh", big, torch.zeros(1 << 15, 1), None, torch.zeros(1, 1 << 16), torch.zeros(1, 1),
                 None, None)


def test_geometry_covers_every_unit_and_row():
    for cell in CELLS:
        for B, I, H in ((1, 1024, 1024), (64, 1024, 1024), (8, 512, 512), (3, 33, 37), (200, 7, 1)):
            lau = step_launch.step_launch_config(cell, torch.bfloat16, B, I, H)
            gx, gy = lau.grid(B, H)
            assert (gx - 1) * lau.BLOCK_N < H <= gx * lau.BLOCK_N and (gy - 1) * lau.BLOCK_B < B <= gy * lau.BLOCK_B
            assert lau.BLOCK_N * (4 if GATES[cell] > 1 else 1) >= 16 and lau.BLOCK_B >= 16  # the MMA's minimum


# -- the cells and modules decode through it ----------------------------------------------

@pytest.fixture
def launches(monkeypatch):
    """Counts fused steps; the recurrence kernels must not run meanwhile."""
    seen = []
    real = tri.step

    def counted(cell, *a):
        seen.append(cell)
        return real(cell, *a)

    def no_recurrence(*a, **k):
        raise AssertionError("the recurrence kernel ran instead of the fused step")
    monkeypatch.setattr(tri, "step", counted)
    monkeypatch.setattr(launch, "forward", no_recurrence)
    return seen


CELL_PAIRS = {"lstm": (fusedrnn.LSTMCell, torch.nn.LSTMCell, {}), "gru": (fusedrnn.GRUCell, torch.nn.GRUCell, {}),
              "rnn_tanh": (fusedrnn.RNNCell, torch.nn.RNNCell, {}),
              "rnn_relu": (fusedrnn.RNNCell, torch.nn.RNNCell, {"nonlinearity": "relu"})}


@pytest.mark.parametrize("cell", CELLS)
def test_cells_decode_in_one_fused_launch_like_torch(cell, launches):
    ours_cls, torch_cls, kw = CELL_PAIRS[cell]
    torch.manual_seed(0)
    ours = ours_cls(5, 7, backend="triton", **kw).to(DEVICE)
    ref = torch_cls(5, 7, **kw).to(DEVICE)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, device=DEVICE)
    hx = (torch.randn(3, 7, device=DEVICE), torch.randn(3, 7, device=DEVICE)) if cell == "lstm" \
        else torch.randn(3, 7, device=DEVICE)
    with torch.no_grad():
        for state in (hx, None):
            got, want = ours(x, state), ref(x, state)
            torch.testing.assert_close(got, want)  # float32 tolerances of torch.testing
    assert launches == [cell, cell]


def test_with_autograd_the_cell_takes_the_recurrence(monkeypatch):
    seen = []
    real = tri.step
    monkeypatch.setattr(tri, "step", lambda *a: seen.append(a[0]) or real(*a))
    m = fusedrnn.GRUCell(5, 7, backend="triton").to(DEVICE)
    m(torch.randn(3, 5, device=DEVICE))[0].sum().backward()
    assert seen == [] and m.weight_hh.grad is not None


def test_module_decode_step_runs_one_fused_launch_per_layer(launches):
    torch.manual_seed(0)
    ours = fusedrnn.LSTM(5, 7, num_layers=2, batch_first=True, backend="triton").to(DEVICE)
    ref = torch.nn.LSTM(5, 7, num_layers=2, batch_first=True).to(DEVICE)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 1, 5, device=DEVICE)
    state = (torch.randn(2, 3, 7, device=DEVICE), torch.randn(2, 3, 7, device=DEVICE))
    with torch.no_grad():
        torch.testing.assert_close(ours(x, state), ref(x, state))
    assert launches == ["lstm", "lstm"]
