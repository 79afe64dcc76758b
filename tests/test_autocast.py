"""torch.autocast on the fused path (CPU here; CUDA autocast in tests/gpu/test_integration_gpu.py).

Under autocast the recurrence gets every float32 argument in the autocast dtype, runs
with autocast off (float32 accumulation inside), and on the CPU the module returns
the dtypes torch.nn returns there.
"""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from support import plain_kernels
from support.parity import TWINS

LOW = [torch.bfloat16, torch.float16]
VARIANTS = [("lstm", {}, False), ("lstm", {}, True), ("lstm", dict(proj_size=3), False),
            ("lstm", dict(proj_size=3), True), ("gru", {}, False), ("gru", {}, True),
            ("rnn_tanh", {}, False), ("rnn_relu", {}, True)]


@pytest.fixture
def kernel_backend(monkeypatch):
    return plain_kernels.install(monkeypatch)


def pair(cell, backend, **kw):
    ours_cls, torch_cls = TWINS[cell]
    if cell.startswith("rnn"):
        kw["nonlinearity"] = cell.split("_")[1]
    torch.manual_seed(0)
    ours = ours_cls(4, 5, num_layers=2, backend=backend, **kw)
    ref = torch_cls(4, 5, num_layers=2, **kw)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def inputs(packed):
    x = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(1))
    return pack_padded_sequence(x, torch.tensor([6, 4, 2])) if packed else x


def outputs(out):
    y, h = out
    return [y.data if hasattr(y, "batch_sizes") else y] + (list(h) if isinstance(h, tuple) else [h])


def run(module, x, low):
    with torch.autocast("cpu", dtype=low):
        return outputs(module(x, None))


def torch_nn_on_this_cpu(ref, x, low):
    """torch.nn's outputs under CPU autocast here, or None where its oneDNN LSTM has no
    primitive for `low` on this CPU (float16 anywhere; bfloat16 too on a CPU without
    AVX-512 BF16 support). Probed by calling it: which dtypes fail depends on the CPU."""
    try:
        return run(ref, x, low)
    except RuntimeError as e:
        if "could not create a primitive" not in str(e):
            raise
        return None


def torch_errors_without_onednn(ref, x, low, truth):
    """torch.nn's own error per output in `low` through its composite path (oneDNN off),
    which runs on any CPU: the tolerance where the oneDNN path has no primitive."""
    with torch.backends.mkldnn.flags(enabled=False):
        want = run(ref, x, low)
    return [(w.float() - t).abs().max().item() for w, t in zip(want, truth)]


@pytest.mark.parametrize("low", LOW, ids=str)
@pytest.mark.parametrize("use_kernels,cell,kw,packed", [(False, *v) for v in VARIANTS]
                         + [(True, *v) for v in VARIANTS if not v[1]])  # kernel backends: no projection
def test_cpu_autocast_matches_torch_dtypes_and_values(cell, kw, packed, low, use_kernels, kernel_backend):
    ours, ref = pair(cell, kernel_backend if use_kernels else "reference", **kw)
    x = inputs(packed)
    got = run(ours, x, low)
    truth = outputs(ref(x, None))  # float32, no autocast
    want = torch_nn_on_this_cpu(ref, x, low)
    if want is None:  # fusedrnn runs it anyway, in the dtypes of oneDNN's path where it has the primitive
        assert cell == "lstm" and not packed and not kw, "only torch's oneDNN LSTM path can lack a primitive"
        assert [t.dtype for t in got] == [low] * 3
        for g, t, err_torch in zip(got, truth, torch_errors_without_onednn(ref, x, low, truth)):
            err_ours = (g.float() - t).abs().max().item()
            assert err_ours <= 2 * err_torch + 1e-3, (err_ours, err_torch)
        return
    assert [t.dtype for t in got] == [t.dtype for t in want]
    for g, w, t in zip(got, want, truth):
        err_ours, err_torch = (g.float() - t).abs().max().item(), (w.float() - t).abs().max().item()
        assert err_ours <= 2 * err_torch + 1e-3, (err_ours, err_torch)


@pytest.mark.parametrize("low", LOW, ids=str)
def test_kernels_receive_the_autocast_dtype(low, kernel_backend, monkeypatch):
    """The fused path runs in the autocast dtype (what CUDA autocast needs from triton/cuda)."""
    seen = []
    real = plain_kernels.forward

    def spy(cell, gx, h0, c0, w_hh, b_hh, *rest):
        seen.append({t.dtype for t in (gx, h0, c0, w_hh, b_hh)})
        assert not torch.is_autocast_enabled("cpu")
        return real(cell, gx, h0, c0, w_hh, b_hh, *rest)

    monkeypatch.setattr(plain_kernels, "forward", spy)
    m = fusedrnn.LSTM(4, 5, backend=kernel_backend)
    with torch.autocast("cpu", dtype=low):
        y, (h, c) = m(torch.randn(3, 2, 4))
    assert seen == [{low}]
    y.float().sum().backward()
    assert m.weight_hh_l0.grad.dtype == torch.float32


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_recurrence_under_autocast_equals_explicit_low_precision(cell):
    """Autocast only casts the arguments: the recurrence's own float32 math is not downcast,
    so the result is bit-identical to calling it with low-precision arguments directly."""
    G = fusedrnn.ops.GATES[cell]
    g = torch.Generator().manual_seed(0)
    gx, h0, w, b = (torch.randn(*s, generator=g) for s in [(5, 2, G * 6), (2, 6), (G * 6, 6), (G * 6,)])
    c0 = torch.randn(2, 6, generator=g) if cell == "lstm" else None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fusedrnn.ops.recurrence(cell, gx, h0, c0, w, b, backend="reference")
    low = [t.bfloat16() if t is not None else None for t in (gx, h0, c0, w, b)]
    want = fusedrnn.ops.recurrence(cell, *low, backend="reference")
    assert all(t.dtype == torch.bfloat16 for t in got)
    for a, e in zip(got, want):
        assert torch.equal(a, e)


def test_backward_inside_autocast_region_equals_outside(kernel_backend):
    grads = []
    for inside in (False, True):
        m = fusedrnn.GRU(4, 5, backend=kernel_backend)
        torch.manual_seed(0)
        m.reset_parameters()
        x = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(2))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, h = m(x)
            if inside:
                y.float().pow(2).sum().backward()
        if not inside:
            y.float().pow(2).sum().backward()
        grads.append([p.grad for p in m.parameters()])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_float64_modules_are_left_alone_like_torch():
    ours, ref = pair("lstm", "reference")
    ours.double(), ref.double()
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    got, want = run(ours, x, torch.bfloat16), run(ref, x, torch.bfloat16)
    assert [t.dtype for t in got] == [t.dtype for t in want] == [torch.float64] * 3
    torch.testing.assert_close(got, want)
