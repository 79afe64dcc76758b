"""In-place ops on the outputs (`y += x`, `h.mul_(2)`), which torch.nn's composite CPU path
allows, keep backward working and give torch.nn's gradients: backward never reads the
user's tensors. (torch.nn's own float32 CPU LSTM layer and cuDNN save their output and
refuse such an op; fusedrnn allows it on every backend.)"""
import pytest
import torch

import fusedrnn
from support import backend_params
from support.parity import make_pair


@pytest.fixture(params=backend_params.ALL)
def backend(request, monkeypatch):
    return backend_params.resolve(request.param, monkeypatch)


def grads_after_inplace(module, x, bidirectional):
    x = x.detach().requires_grad_()
    y, hidden = module(x)
    h = hidden[0] if isinstance(hidden, tuple) else hidden
    y += x.repeat(1, 1, 2 if bidirectional else 1)  # the in-place op of the issue
    y.mul_(1.5)
    h.add_(1.0)
    loss = y.square().sum() + h.square().sum()
    if isinstance(hidden, tuple):
        hidden[1].mul_(-1)
        loss = loss + hidden[1].sum()
    leaves = [x] + list(module.parameters())
    return [y.detach(), h.detach()] + list(torch.autograd.grad(loss, leaves))


@pytest.mark.sampled
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_inplace_on_outputs_like_torch(cell, bidirectional, backend):
    dtype = torch.float64 if backend == "reference" else torch.float32
    ours, ref = make_pair(cell, 4, 4, backend=backend, dtype=dtype, num_layers=2, bidirectional=bidirectional)
    x = torch.randn(3, 2, 4, dtype=dtype)
    got = grads_after_inplace(ours, x, bidirectional)
    # torch.nn in float64: its float32 CPU LSTM layer (oneDNN) saves its own output and
    # refuses the in-place op itself; the float64 composite path allows it, as cuDNN does not
    want = grads_after_inplace(ref.double(), x.double(), bidirectional)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_relu"])
def test_recurrence_output_modified_in_place(cell, backend):
    """At the ops level too: the saved state history is private, so y.zero_() changes nothing."""
    G = fusedrnn.ops.GATES[cell]
    g = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g).requires_grad_()  # noqa: E731
    args = (mk(3, 2, G * 4), mk(2, 4), mk(2, 4) if cell == "lstm" else None, mk(G * 4, 4), mk(G * 4))
    lengths = torch.tensor([3, 1])
    leaves = [a for a in args if a is not None]
    results = []
    for spoil in (False, True):
        out = fusedrnn.ops.recurrence(cell, *args, lengths=lengths, backend=backend)
        loss = sum((o * o.detach().sign()).sum() for o in out)  # cotangents fixed before the spoiling
        if spoil:
            for o in out:
                o.detach().zero_()  # shares storage with the output: what backward must not read
        results.append(torch.autograd.grad(loss, leaves))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
