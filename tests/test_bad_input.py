"""Bad input on the fused path: NaN/Inf propagate like torch.nn, odd strides work, and
wrong devices, oversized problems and bad lengths raise clear errors before any kernel runs.
"""
import pytest
import torch

import fusedrnn
from support import plain_kernels
from fusedrnn.ops import GATES
from fusedrnn.ops.common import INT32_MAX, check_int32_indexing
from support.parity import make_pair, run_with_grads

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


@pytest.fixture
def kernel_backend(monkeypatch):
    return plain_kernels.install(monkeypatch)


@pytest.fixture(params=["reference", "kernels"])
def backend(request, kernel_backend):
    return kernel_backend if request.param == "kernels" else "reference"


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if the kernel backend's forward is ever entered."""
    def forbidden(*a, **k):
        raise AssertionError("a kernel was launched")
    monkeypatch.setattr(plain_kernels, "forward", forbidden)


def same_as_torch(ours, ref, x, hx=None):
    o_ours, g_ours = run_with_grads(ours, x, hx)
    o_ref, g_ref = run_with_grads(ref, x.detach().clone().requires_grad_(), hx)
    for a, b in zip(o_ours + g_ours, o_ref + g_ref):
        torch.testing.assert_close(a, b, equal_nan=True, atol=1e-10, rtol=1e-10)
    return o_ours, g_ours


# -- NaN / Inf -------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_nonfinite_input_propagates_like_torch(cell, value, backend):
    ours, ref = make_pair(cell, 3, 4, backend=backend, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    x[2, 1, 0] = value
    (y, *_), _ = same_as_torch(ours, ref, x.requires_grad_())
    if value != value:  # NaN poisons its own sequence, never a neighbour in the batch
        assert torch.isnan(y[:, 1]).any() and not torch.isnan(y[:, [0, 2]]).any()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_nan_in_weights_and_state(cell, backend):
    ours, ref = make_pair(cell, 3, 4, backend=backend)
    with torch.no_grad():
        for m in (ours, ref):
            m.weight_hh_l0[0, 0] = float("nan")
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    same_as_torch(ours, ref, x)
    h = torch.zeros(1, 2, 4, dtype=torch.float64)
    h[0, 0, 1] = float("inf")
    hx = (h.requires_grad_(), torch.zeros_like(h).requires_grad_()) if cell == "lstm" else h.requires_grad_()
    same_as_torch(ours, ref, x, hx)


def triton_reason():
    return fusedrnn.backends.why_not("triton", torch.device("cpu"), "lstm", torch.float32, 8)


@pytest.mark.skipif(triton_reason() is not None, reason=f"triton cannot run on the CPU here: {triton_reason()}")
@pytest.mark.parametrize("cell", CELLS)
def test_triton_nonfinite_and_strided_inputs_like_torch(cell):
    ours, ref = make_pair(cell, 3, 8, backend="triton", dtype=torch.float32)
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)).permute(2, 0, 1)  # (T, B, I), strided
    x_bad = x.clone()
    x_bad[1, 0, 2] = float("nan")
    x_bad[2, 1, 0] = float("inf")
    for inp in (x.requires_grad_(), x_bad.detach().requires_grad_()):
        o_ours, g_ours = run_with_grads(ours, inp, None)
        o_ref, g_ref = run_with_grads(ref, inp.detach().clone().requires_grad_(), None)
        for a, b in zip(o_ours + g_ours, o_ref + g_ref):
            assert torch.equal(a.isnan(), b.isnan())
            torch.testing.assert_close(a, b, equal_nan=True, atol=1e-5, rtol=1e-4)


# -- strides ---------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_noncontiguous_and_channel_strided_inputs(cell, backend):
    ours, ref = make_pair(cell, 3, 4, backend=backend, num_layers=2)
    g = torch.Generator().manual_seed(0)
    layouts = {
        "channels-strided": torch.randn(2, 3, 5, generator=g, dtype=torch.float64).permute(2, 0, 1),
        "every-other-step": torch.randn(10, 2, 3, generator=g, dtype=torch.float64)[::2],
        "batch-broadcast": torch.randn(5, 1, 3, generator=g, dtype=torch.float64).expand(5, 2, 3),
        "feature-sliced": torch.randn(5, 2, 6, generator=g, dtype=torch.float64)[:, :, ::2],
    }
    for name, x in layouts.items():
        assert not x.is_contiguous(), name
        same_as_torch(ours, ref, x.requires_grad_() if x.is_leaf else x)
    h = torch.randn(2, 4, 2, generator=g, dtype=torch.float64).transpose(1, 2)  # (L, B, H) strided
    hx = (h.requires_grad_(), h.flip(2)) if cell == "lstm" else h.requires_grad_()
    same_as_torch(ours, ref, layouts["channels-strided"], hx)


def test_batch_first_strided(backend):
    ours, ref = make_pair("lstm", 3, 4, backend=backend, batch_first=True)
    x = torch.randn(5, 3, 2, dtype=torch.float64).permute(2, 0, 1).requires_grad_()  # (B=2, T=5, I=3), B stride 1
    same_as_torch(ours, ref, x)


# -- devices ---------------------------------------------------------------------------

def test_module_weights_on_another_device_raise_torchs_error(backend, no_launch):
    for packed in (False, True):
        ours = fusedrnn.GRU(3, 4, backend=backend, device="meta")
        x = torch.randn(3, 2, 3)
        if packed:
            x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([3, 2]))
        with pytest.raises(RuntimeError, match="Input and parameter tensors are not at the same device, "
                                               "found input tensor at cpu and parameter tensor at meta"):
            ours(x)


def test_module_state_on_another_device_raises_torchs_error(backend, no_launch):
    ours, ref = make_pair("lstm", 3, 4, backend=backend)
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    hx = (torch.zeros(1, 2, 4, dtype=torch.float64), torch.zeros(1, 2, 4, dtype=torch.float64, device="meta"))
    with pytest.raises(RuntimeError) as theirs:
        ref(x, hx)
    with pytest.raises(RuntimeError) as mine:
        ours(x, hx)
    assert "not at the same device" in str(theirs.value) and "not at the same device" in str(mine.value)


@pytest.mark.parametrize("which", ["h0", "c0", "w_hh", "b_hh"])
def test_recurrence_device_mismatch_raises_before_launch(which, kernel_backend, no_launch):
    args = dict(gx=torch.randn(3, 2, 16), h0=torch.zeros(2, 4), c0=torch.zeros(2, 4), w_hh=torch.randn(16, 4),
                b_hh=torch.randn(16))
    args[which] = args[which].to("meta")
    with pytest.raises(RuntimeError, match=f"{which} is on meta but gx is on cpu"):
        fusedrnn.ops.recurrence("lstm", **args, backend=kernel_backend)


# -- int32 index overflow --------------------------------------------------------------

def test_int32_check_function():
    check_int32_indexing(2**10, 2**9, 4, 2**9)  # 2**30 elements
    with pytest.raises(ValueError, match=r"T\*B\*G\*H \(gx and its gradient\) = 2147483648 elements exceeds "
                                         r"2147483647"):
        check_int32_indexing(2**11, 2**9, 4, 2**9)
    with pytest.raises(ValueError, match=r"G\*H\*P \(w_hh\)"):
        check_int32_indexing(1, 1, 4, 2**14, 2**15)
    check_int32_indexing(INT32_MAX, 1, 1, 1)


@pytest.mark.parametrize("cell", CELLS)
def test_huge_problem_raises_before_launch(cell, kernel_backend, no_launch):
    """A stride-0 gx of 2**31 elements (no memory behind it) is refused before any launch."""
    G, H, B = GATES[cell], 64, 512
    T = INT32_MAX // (B * G * H) + 1  # the first T past the limit
    gx = torch.zeros(1, 1, 1).expand(T, B, G * H)
    c0 = torch.zeros(B, H) if cell == "lstm" else None
    with pytest.raises(ValueError, match="32-bit offsets"):
        fusedrnn.ops.recurrence(cell, gx, torch.zeros(B, H), c0, torch.zeros(G * H, H), None, backend=kernel_backend)


# -- lengths ---------------------------------------------------------------------------

BAD_LENGTHS = [
    (torch.tensor([3, 0]), ValueError, r"lengths must lie in \[1, T=3\], got values in \[0, 3\]"),
    (torch.tensor([4, 2]), ValueError, r"lengths must lie in \[1, T=3\], got values in \[2, 4\]"),
    (torch.tensor([-1, 2]), ValueError, r"lengths must lie in \[1, T=3\]"),
    (torch.tensor([3.0, 2.0]), TypeError, "lengths must be an int32 or int64 tensor, got torch.float32"),
    (torch.tensor([True, True]), TypeError, "int32 or int64"),
    (torch.tensor([3, 2, 1]), ValueError, r"lengths must have shape \(2,\), got \(3,\)"),
    (torch.tensor([[3, 2]]), ValueError, r"lengths must have shape \(2,\)"),
    (torch.tensor([3, 2], device="meta"), RuntimeError, "lengths is on meta; it must be on the CPU or on cpu"),
    ([3, 2], TypeError, "lengths must be a tensor, got list"),
]


@pytest.mark.parametrize("lengths,exc,msg", BAD_LENGTHS, ids=[m[:25] for _, _, m in BAD_LENGTHS])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bad_lengths_raise_clearly_before_launch(cell, lengths, exc, msg, backend, no_launch):
    G = GATES[cell]
    c0 = torch.zeros(2, 4) if cell == "lstm" else None
    with pytest.raises(exc, match=msg):
        fusedrnn.ops.recurrence(cell, torch.randn(3, 2, G * 4), torch.zeros(2, 4), c0, torch.randn(G * 4, 4), None,
                                lengths=lengths, backend=backend)


def test_good_lengths_in_either_int_dtype(backend):
    args = (torch.randn(3, 2, 12, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64), None,
            torch.randn(12, 4, dtype=torch.float64), None)
    a = fusedrnn.ops.recurrence("gru", *args, lengths=torch.tensor([3, 1], dtype=torch.int32), backend=backend)
    b = fusedrnn.ops.recurrence("gru", *args, lengths=torch.tensor([3, 1]), backend="reference")
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert (a[0][1:, 1] == 0).all()


@pytest.mark.parametrize("shape", [(3, 2, 4), (1, 2, 9), (1, 1, 4)], ids=["layers", "size", "batch"])
def test_packed_lstm_with_wrong_state_raises_where_torch_crashes(shape, backend):
    """torch.nn.LSTM skips its argument checks for a PackedSequence: on the CPU (torch 2.13) an
    h0 with too many layers crashes the process (SIGSEGV); fusedrnn raises torch's own error."""
    m = fusedrnn.LSTM(3, 4, backend=backend, dtype=torch.float64)
    x = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 3, dtype=torch.float64), torch.tensor([5, 3]))
    hx = (torch.zeros(*shape, dtype=torch.float64), torch.zeros(1, 2, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(1, 2, 4\), got \[" + ", ".join(map(str, shape))):
        m(x, hx)
