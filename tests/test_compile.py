"""torch.compile(fullgraph=True) over fusedrnn modules and the custom ops behind the kernel backends.

The kernel-backend path is exercised with tests/support/plain_kernels.py (a genuine plain-torch
implementation of the kernel contract) standing in for Triton/CUDA; the reference
backend is traced by dynamo directly.
"""
import pytest
import torch
import torch._dynamo
from torch import nn

import fusedrnn
from support import plain_kernels
from fusedrnn.ops import library


@pytest.fixture
def kernel_backend(monkeypatch):
    name = plain_kernels.install(monkeypatch)
    yield name
    torch._dynamo.reset()


class Recorder:
    """A torch.compile backend that keeps every graph dynamo hands it and runs it eagerly."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward

    def targets(self, i=-1):
        return {str(n.target) for n in self.graphs[i].graph.nodes if n.op == "call_function"}


class Tagger(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 2)

    def forward(self, x):
        y, _ = self.rnn(torch.tanh(self.proj(x)))
        return self.head(y)


def grads_of(model, x):
    model.zero_grad()
    x = x.detach().requires_grad_()
    out = model(x)
    out.pow(2).sum().backward()
    return [out.detach(), x.grad] + [p.grad.clone() for p in model.parameters()]


def assert_same(a, b, atol=0.0):
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=atol, rtol=0 if atol == 0 else 1e-6)


def make(cls, backend, **kw):
    torch.manual_seed(0)
    return Tagger(cls(4, 5, backend=backend, **kw)).double()


@pytest.mark.parametrize("cls,kw", [(fusedrnn.LSTM, dict(num_layers=2)), (fusedrnn.GRU, dict(bidirectional=True)),
                                    (fusedrnn.RNN, dict(nonlinearity="relu"))])
def test_fullgraph_kernel_backend_uses_custom_ops(kernel_backend, cls, kw):
    model = make(cls, kernel_backend, **kw)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    rec = Recorder()
    compiled = torch.compile(model, fullgraph=True, backend=rec)
    got = grads_of(compiled, x)
    assert len(rec.graphs) == 1
    assert "fusedrnn.rnn_layer_forward.default" in rec.targets()
    assert_same(got, grads_of(model, x))


def test_fullgraph_reference_backend(kernel_backend):
    model = make(fusedrnn.LSTM, "reference", num_layers=2, bidirectional=True)
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    rec = Recorder()
    got = grads_of(torch.compile(model, fullgraph=True, backend=rec), x)
    assert len(rec.graphs) == 1 and not any("fusedrnn" in t for t in rec.targets())
    assert_same(got, grads_of(model, x))


def test_inductor_compiles_lstm_with_kernel_backend(kernel_backend):
    """The default backend (inductor, AOTAutograd, fake tensors) end to end."""
    model = make(fusedrnn.LSTM, kernel_backend).float()
    x = torch.randn(4, 2, 3)
    compiled = torch.compile(model, fullgraph=True)
    assert_same(grads_of(compiled, x), grads_of(model, x), atol=1e-5)


def test_changing_backend_recompiles(kernel_backend):
    rnn = fusedrnn.GRU(3, 4, backend="reference")
    rec = Recorder()
    compiled = torch.compile(rnn, fullgraph=True, backend=rec)
    x = torch.randn(2, 2, 3)
    compiled(x)
    assert not any("fusedrnn" in t for t in rec.targets())
    rnn.backend = kernel_backend
    compiled(x)
    assert len(rec.graphs) == 2 and "fusedrnn.rnn_layer_forward.default" in rec.targets()


@pytest.mark.parametrize("kw", [{}, dict(bidirectional=True, proj_size=2)], ids=["uni", "bidir-proj"])
def test_dynamic_shapes_one_graph_for_many_lengths(kernel_backend, kw):
    rnn = fusedrnn.LSTM(3, 4, backend=kernel_backend, **kw)
    rec = Recorder()
    compiled = torch.compile(rnn, fullgraph=True, dynamic=True, backend=rec)
    for T, B in [(2, 5), (5, 2), (7, 4)]:  # not 0, 1 or 3 (= input_size): those specialize
        x = torch.randn(T, B, 3, requires_grad=True)
        y, (h, c) = compiled(x)
        y2, (h2, c2) = rnn(x)
        torch.testing.assert_close((y, h, c), (y2, h2, c2), atol=0, rtol=0)
        (y.sum() + c.sum()).backward()
    assert len(rec.graphs) == 1


@pytest.mark.parametrize("use_kernels", [False, True])
def test_functional_recurrence_with_lengths_compiles_and_checks_lengths(kernel_backend, use_kernels):
    backend = kernel_backend if use_kernels else "reference"

    def f(gx, h0, w, b, lengths):
        return fusedrnn.ops.recurrence("gru", gx, h0, None, w, b, lengths=lengths, reverse=True, backend=backend)

    g = torch.Generator().manual_seed(0)
    args = [torch.randn(4, 3, 6, generator=g), torch.randn(3, 2, generator=g), torch.randn(6, 2, generator=g),
            torch.randn(6, generator=g)]
    lengths = torch.tensor([4, 1, 2])
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*args, lengths), f(*args, lengths), atol=0, rtol=0)
    # values are checked inside the graph (a data-dependent read would break it)
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[1, T=4\]"):
        compiled(*args, torch.tensor([4, 0, 2]))
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[1, T=4\]"):
        compiled(*args, torch.tensor([5, 1, 2]))


CASES = [("lstm", 4, False, None), ("gru", 3, True, [3, 1]), ("rnn_tanh", 1, True, None),
         ("rnn_relu", 1, False, [2, 3])]


def op_args(cell, G, reverse, lengths, need_grad=True):
    g = torch.Generator().manual_seed(1)
    T, B, H = 3, 2, 3
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(need_grad)  # noqa: E731
    c0 = mk(B, H) if cell == "lstm" else None
    L = torch.tensor(lengths, dtype=torch.int32) if lengths else None
    return (plain_kernels.__name__, cell, mk(T, B, G * H), mk(B, H), c0, mk(G * H, H), mk(G * H), L, reverse, need_grad)


@pytest.mark.parametrize("cell,G,reverse,lengths", CASES)
def test_custom_ops_pass_opcheck(cell, G, reverse, lengths):
    """Schema, fake (meta) implementation, registered autograd and AOT dispatch, as torch checks them."""
    args = op_args(cell, G, reverse, lengths)
    torch.library.opcheck(torch.ops.fusedrnn.rnn_layer_forward, args)
    torch.library.opcheck(torch.ops.fusedrnn.rnn_layer_forward, op_args(cell, G, reverse, lengths, need_grad=False))
    outs = torch.ops.fusedrnn.rnn_layer_forward(*args)
    y, y_saved, saved = outs[0], outs[3], outs[4:]
    torch.testing.assert_close(y_saved, y, rtol=0, atol=0)
    assert y_saved.untyped_storage().data_ptr() != y.untyped_storage().data_ptr()
    name, _, gx, h0, c0, w, b, L, rev, _ = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    dy, dhT = torch.randn_like(y), torch.randn_like(h0)
    dcT = torch.randn_like(c0) if c0 is not None else None
    torch.library.opcheck(torch.ops.fusedrnn.rnn_layer_backward,
                          (name, cell, dy, dhT, dcT, gx, h0, c0, w, b, L, rev, y_saved.detach(),
                           [s.detach() for s in saved]))


@pytest.mark.parametrize("cell,G,reverse,lengths", CASES)
def test_custom_op_path_equals_autograd_function(cell, G, reverse, lengths):
    """Through the custom ops (what graphs record) gives bit-for-bit what eager's autograd.Function gives."""
    _, _, gx, h0, c0, w, b, L, rev, _ = op_args(cell, G, reverse, lengths)
    leaves = [t for t in (gx, h0, c0, w, b) if t is not None]
    results = []
    for via in ("op", "function"):
        outs = library.recurrence(plain_kernels, cell, gx, h0, c0, w, b, L, rev, via=via)
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outs)
        results.append(list(outs) + list(torch.autograd.grad(loss, leaves)))
    assert_same(*results)


def test_backend_without_saved_shapes_explains_itself(monkeypatch):
    monkeypatch.delattr(plain_kernels, "saved_shapes")
    args = op_args("lstm", 4, False, None)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(NotImplementedError, match="has no saved_shapes"):
            torch.ops.fusedrnn.rnn_layer_forward(*fake)


def test_outputs_aliasing_inputs_are_copied(monkeypatch):
    """A backend may hand back hT as a view of y; the custom op must not return aliases."""
    real = plain_kernels.forward

    def forward_with_view(*a):
        y, hT, cT, saved = real(*a)
        return y, y[-1], cT, saved

    monkeypatch.setattr(plain_kernels, "forward", forward_with_view)
    args = op_args("rnn_tanh", 1, False, None)
    y, hT, *_ = torch.ops.fusedrnn.rnn_layer_forward(*args)
    assert hT.untyped_storage().data_ptr() != y.untyped_storage().data_ptr()
    torch.testing.assert_close(hT, y[-1])


def test_outputs_that_are_views_of_a_backend_buffer_can_be_modified_in_place(monkeypatch):
    """A backend may return y as a view of a buffer of its own (e.g. (T,B,D,P) reshaped):
    the op hands out a tensor of its own, so `y += 1` is legal, as on torch.nn's output."""
    real = plain_kernels.forward

    def forward_with_view(*a, **k):
        y, hT, cT, saved = real(*a, **k)
        return torch.stack([y, y]).select(0, 0), hT, cT, saved

    monkeypatch.setattr(plain_kernels, "forward", forward_with_view)
    _, cell, gx, h0, c0, w, b, L, rev, _ = op_args("lstm", 4, False, None)
    y, hT, cT = library.recurrence(plain_kernels, cell, gx, h0, c0, w, b, L, rev)
    assert not y._is_view()
    want = y.detach().clone()
    y += 1
    y.sum().backward()
    monkeypatch.setattr(plain_kernels, "forward", real)
    y2 = library.recurrence(plain_kernels, cell, gx, h0, c0, w, b, L, rev)[0]
    torch.testing.assert_close(y2.detach() + 1, want + 1)
    grads = [t.grad.clone() for t in (gx, w)]
    for t in (gx, w):
        t.grad = None
    y2.sum().backward()
    torch.testing.assert_close([gx.grad, w.grad], grads, rtol=0, atol=0)


def test_dynamo_needs_allow_rnn_which_fusedrnn_sets():
    """Why fusedrnn sets torch._dynamo.config.allow_rnn: dynamo refuses any nn.LSTM (subclass) without it."""
    rnn = fusedrnn.LSTM(3, 4, backend="reference")
    with torch._dynamo.config.patch(allow_rnn=False):
        torch._dynamo.reset()
        with pytest.raises(torch._dynamo.exc.Unsupported, match="RNN, GRU, or LSTM"):
            torch.compile(rnn, fullgraph=True, backend="eager")(torch.randn(2, 1, 3))
    torch._dynamo.reset()
    assert torch._dynamo.config.allow_rnn
    torch.compile(rnn, fullgraph=True, backend="eager")(torch.randn(2, 1, 3))


def triton_reason():
    return fusedrnn.backends.why_not("triton", torch.device("cpu"), "lstm", torch.float32, 8)


@pytest.mark.skipif(triton_reason() is not None, reason=f"triton cannot run on the CPU here: {triton_reason()}")
@pytest.mark.parametrize("cls", [fusedrnn.LSTM, fusedrnn.GRU])
def test_fullgraph_triton_kernels(cls):
    """The Triton kernels (interpreter on the CPU) behind the custom ops, in one graph."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Tagger(cls(4, 8, backend="triton"))
    x = torch.randn(5, 2, 3)
    rec = Recorder()
    got = grads_of(torch.compile(model, fullgraph=True, backend=rec), x)
    assert len(rec.graphs) == 1 and "fusedrnn.rnn_layer_forward.default" in rec.targets()
    assert_same(got, grads_of(model, x))


# -- contract v2: projections and both directions of a layer in one op ------------------

def op_args_v2(cell, D, proj, lengths=None, need_grad=True):
    """The forward op's arguments with D directions stacked and, for lstm, a projection (P=2 < H=3)."""
    g = torch.Generator().manual_seed(2)
    T, B, H, G = 3, 2, 3, fusedrnn.ops.GATES[cell]
    P = 2 if proj else H
    lead = (D,) if D == 2 else ()
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(need_grad)  # noqa: E731
    L = torch.tensor(lengths, dtype=torch.int32) if lengths else None
    return (plain_kernels.__name__, cell, mk(T, B, D * G * H), mk(*lead, B, P),
            mk(*lead, B, H) if cell == "lstm" else None, mk(*lead, G * H, P), mk(*lead, G * H), L, False, need_grad,
            mk(*lead, P, H) if proj else None)


V2_CASES = [("lstm", 2, True, [3, 1]), ("lstm", 1, True, None), ("gru", 2, False, None), ("rnn_relu", 2, False, [2, 3])]


@pytest.mark.parametrize("cell,D,proj,lengths", V2_CASES)
def test_v2_custom_ops_pass_opcheck(kernel_backend, cell, D, proj, lengths):
    args = op_args_v2(cell, D, proj, lengths)
    torch.library.opcheck(torch.ops.fusedrnn.rnn_layer_forward, args)
    torch.library.opcheck(torch.ops.fusedrnn.rnn_layer_forward, op_args_v2(cell, D, proj, lengths, need_grad=False))
    outs = torch.ops.fusedrnn.rnn_layer_forward(*args)
    y, y_saved, saved = outs[0], outs[3], outs[4:]
    name, _, gx, h0, c0, w, b, L, rev, _, w_hr = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    dcT = torch.randn_like(c0) if c0 is not None else None
    torch.library.opcheck(torch.ops.fusedrnn.rnn_layer_backward,
                          (name, cell, torch.randn_like(y), torch.randn_like(h0), dcT, gx, h0, c0, w, b, L, rev,
                           y_saved.detach(), [s.detach() for s in saved], w_hr))


@pytest.mark.parametrize("cell,D,proj,lengths", V2_CASES)
def test_v2_fake_shapes_equal_the_real_ones(kernel_backend, cell, D, proj, lengths):
    """The fake implementations give both ops' outputs the real shapes and dtypes (saved_shapes included)."""
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in op_args_v2(cell, D, proj, lengths)]
    real = torch.ops.fusedrnn.rnn_layer_forward(*args)
    name, _, gx, h0, c0, w, b, L, rev, _, w_hr = args
    dcT = torch.randn_like(c0) if c0 is not None else None
    bwd = (name, cell, torch.randn_like(real[0]), torch.randn_like(h0), dcT, gx, h0, c0, w, b, L, rev, real[3],
           list(real[4:]), w_hr)
    real_bwd = torch.ops.fusedrnn.rnn_layer_backward(*bwd)
    assert [t.shape for t in real_bwd] == [t.shape if t is not None else (0,) for t in (gx, h0, c0, w, b, w_hr)]
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = lambda a: mode.from_tensor(a) if isinstance(a, torch.Tensor) else a  # noqa: E731
        fake_fwd = torch.ops.fusedrnn.rnn_layer_forward(*[fake(a) for a in args])
        fake_bwd = torch.ops.fusedrnn.rnn_layer_backward(*[fake(a) if not isinstance(a, list) else [fake(t) for t in a]
                                                            for a in bwd])
    for got, want in ((fake_fwd, real), (fake_bwd, real_bwd)):
        assert [(t.shape, t.dtype) for t in got] == [(t.shape, t.dtype) for t in want]


def op_nodes(rec):
    return [n for n in rec.graphs[-1].graph.nodes if str(n.target) == "fusedrnn.rnn_layer_forward.default"]


@pytest.mark.parametrize("directions", [2, 1])
def test_fullgraph_bidirectional_projection(monkeypatch, directions):
    """A 2-layer bidirectional LSTM with proj_size in one graph: one op per layer where the backend
    runs both directions at once, one per direction where it declines; eager's values and gradients."""
    name = plain_kernels.install(monkeypatch, directions=directions)
    torch.manual_seed(0)
    model = Tagger(fusedrnn.LSTM(4, 5, num_layers=2, bidirectional=True, proj_size=3, backend=name)).double()
    model.head = nn.Linear(6, 2).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    rec = Recorder()
    got = grads_of(torch.compile(model, fullgraph=True, backend=rec), x)
    assert len(rec.graphs) == 1 and len(op_nodes(rec)) == 2 * (3 - directions)
    assert_same(got, grads_of(model, x))
    torch._dynamo.reset()


def test_inductor_compiles_bidirectional_projection(kernel_backend):
    """AOTAutograd and inductor with the v2 fake shapes (D = 2, w_hr) end to end."""
    torch.manual_seed(0)
    model = Tagger(fusedrnn.LSTM(4, 5, bidirectional=True, proj_size=2, backend=kernel_backend))
    model.head = nn.Linear(4, 2)
    x = torch.randn(4, 2, 3)
    assert_same(grads_of(torch.compile(model, fullgraph=True), x), grads_of(model, x), atol=1e-5)
