"""torch.func transforms, forward-mode AD and double backward through fusedrnn's modules and cells
on every backend that runs on the CPU. The kernels have one first-order backward; under a
transform or with forward-mode tangents the call runs the reference recurrence, and a backward
with create_graph=True differentiates a reference recomputation (fusedrnn/ops/autodiff.py).

Each row of the matrix in docs/integration.md is computed here by the transform under test and
compared with the same quantity computed by torch.nn in float64 through a route torch.nn
supports on the CPU (reverse mode for a jvp, a loop for vmap, torch.autograd for grad and
jacrev): float64 to rounding; float32 (the Triton kernels run no float64) within twice
torch.nn's own float32 error by the same route."""
import pytest
import torch
import torch.autograd.forward_ad as fwad
from torch.func import functional_call, grad, jacrev, jvp, vmap

from support import backend_params
from support import plain_kernels
from support.parity import make_pair

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
KINDS = ["jvp", "forward_ad", "grad", "grad_params", "jacrev", "vmap", "double_backward"]
T, B, I, H, LAYERS = 3, 3, 4, 5, 2
F64_TOL = 1e-10


@pytest.fixture(params=backend_params.ALL)
def backend(request, monkeypatch):
    """(backend name, dtype): float32 for the Triton kernels, float64 elsewhere."""
    name = backend_params.resolve(request.param, monkeypatch)
    if request.param == "kernels":
        plain_kernels.install_step(monkeypatch)  # a fused step as well, as the Triton backend has
    return name, (torch.float32 if request.param == "triton" else torch.float64)


def randn(*shape, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def is_lstm(module):
    return isinstance(module, (torch.nn.LSTM, torch.nn.LSTMCell))


def state(module, cells, dtype):
    lead = () if cells else (module.num_layers,)
    h = randn(*lead, B, H, seed=1, dtype=dtype)
    return (h, randn(*lead, B, H, seed=2, dtype=dtype)) if is_lstm(module) else h


def outputs(out):
    """A cell's h or (h, c), a module's (y, h) or (y, (h, c)), flattened into one vector."""
    flat = [out] if isinstance(out, torch.Tensor) else [out[0], *(out[1] if isinstance(out[1], tuple) else [out[1]])]
    return torch.cat([o.reshape(-1) for o in flat])


def quantity(kind, module, x, hx, ours: bool):
    """`kind` of x -> outputs(module(x, hx)): by the transform under test (ours=True) or by a route
    torch.nn supports (ours=False). Always one flat tensor."""
    f = lambda x: outputs(module(x, hx))  # noqa: E731
    n = f(x).numel()
    v, w = randn(*x.shape, seed=3, dtype=x.dtype), randn(n, seed=4, dtype=x.dtype)
    params = dict(module.named_parameters())
    if kind in ("jvp", "forward_ad"):
        if not ours:
            return torch.autograd.functional.jvp(f, x, v)[1]  # reverse mode twice
        if kind == "jvp":
            return jvp(f, (x,), (v,))[1]
        with fwad.dual_level():
            return fwad.unpack_dual(f(fwad.make_dual(x, v))).tangent
    if kind == "grad":
        if ours:
            return grad(lambda x: f(x) @ w)(x)
        xr = x.clone().requires_grad_()
        return torch.autograd.grad(f(xr) @ w, xr)[0]
    if kind == "grad_params":
        if ours:
            g = grad(lambda p: outputs(functional_call(module, p, (x, hx))) @ w)(params)
            return torch.cat([t.reshape(-1) for t in g.values()])
        return torch.cat([t.reshape(-1) for t in torch.autograd.grad(f(x) @ w, list(params.values()))])
    if kind == "jacrev":
        return jacrev(f)(x) if ours else torch.autograd.functional.jacobian(f, x)
    if kind == "vmap":
        xb = torch.stack([x, 2 * v, x - v])
        return vmap(f)(xb) if ours else torch.stack([f(xi) for xi in xb])
    # double backward: the gradient's own gradient, w.r.t. the input and every parameter
    xr = x.clone().requires_grad_()
    g = torch.autograd.grad(f(xr) @ w, xr, create_graph=True)[0]
    return torch.cat([t.reshape(-1) for t in torch.autograd.grad((g * v).sum(), [xr, *params.values()])])


def check(kind, cell, backend, cells):
    name, dtype = backend
    kw = {} if cells else {"num_layers": LAYERS}
    ours, ref = make_pair(cell, I, H, backend=name, dtype=dtype, cells=cells, **kw)
    x = randn(*((B, I) if cells else (T, B, I)), seed=0, dtype=dtype)
    got = quantity(kind, ours, x, state(ours, cells, dtype), ours=True)
    ref64 = ref.double()
    truth = quantity(kind, ref64, x.double(), state(ref64, cells, torch.float64), ours=False)
    assert_close(got, truth, lambda ref32: quantity(kind, ref32, x, state(ref32, cells, dtype), ours=False), ref64)


def assert_close(got, truth, torch_float32, ref64):
    """got (float64, or float32) against the float64 truth: to rounding, or within twice the error of
    torch_float32(torch.nn module in float32)."""
    assert got.shape == truth.shape
    e_ours = (got.double() - truth).abs().max().item()
    if got.dtype == torch.float64:
        assert e_ours < F64_TOL, e_ours
        return
    e_torch = (torch_float32(ref64.float()).double() - truth).abs().max().item()
    assert e_ours <= 2 * e_torch + torch.finfo(got.dtype).eps * max(1.0, truth.abs().max().item()), (e_ours, e_torch)


@pytest.mark.sampled
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cell", CELLS)
def test_modules(kind, cell, backend):
    check(kind, cell, backend, cells=False)


@pytest.mark.sampled
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cell", CELLS)
def test_cells(kind, cell, backend):
    check(kind, cell, backend, cells=True)


def state_quantity(kind, cell_module, x, h, ours: bool):
    """`kind` of h -> outputs(cell(x, h)) with x fixed (no tensor of the call but the state is
    transformed, the case where a fused step could otherwise be taken)."""
    hx = (lambda h: (h, 2 * h)) if is_lstm(cell_module) else (lambda h: h)
    f = lambda h: outputs(cell_module(x, hx(h)))  # noqa: E731
    v = randn(*h.shape, seed=5, dtype=h.dtype)
    if kind == "vmap":
        hb = torch.stack([h, v, h - v])
        return vmap(f)(hb) if ours else torch.stack([f(hi) for hi in hb])
    if not ours:
        return torch.autograd.functional.jvp(f, h, v)[1]
    if kind == "jvp":
        return jvp(f, (h,), (v,))[1]
    with fwad.dual_level():
        return fwad.unpack_dual(f(fwad.make_dual(h, v))).tangent


@pytest.mark.parametrize("kind", ["jvp", "forward_ad", "vmap"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cells_transformed_in_the_state_only(kind, cell, backend):
    name, dtype = backend
    ours, ref = make_pair(cell, I, H, backend=name, dtype=dtype, cells=True)
    x, h = randn(B, I, seed=0, dtype=dtype), randn(B, H, seed=1, dtype=dtype)
    with torch.no_grad() if kind == "vmap" else torch.enable_grad():  # vmap with nothing to record: decoding
        got = state_quantity(kind, ours, x, h, ours=True)
    ref64 = ref.double()
    truth = state_quantity(kind, ref64, x.double(), h.double(), ours=False)
    assert_close(got, truth, lambda ref32: state_quantity(kind, ref32, x, h, ours=False), ref64)


def layer_args(cell, D, dtype, proj=0, seed=10):
    """Arguments of one layer in contract v2 (fusedrnn/ops/fused.py), leaves requiring grad."""
    G = {"lstm": 4, "gru": 3}.get(cell, 1)
    P = proj or H
    lead = (D,) if D == 2 else ()
    r = lambda *s, k: randn(*s, seed=seed + k, dtype=dtype).mul(0.5).requires_grad_()  # noqa: E731
    gx, h0 = r(T, B, D * G * H, k=0), r(*lead, B, P, k=1)
    c0 = r(*lead, B, H, k=2) if cell == "lstm" else None
    w_hh, b_hh = r(*lead, G * H, P, k=3), r(*lead, G * H, k=4)
    w_hr = r(*lead, P, H, k=5) if proj else None
    return gx, h0, c0, w_hh, b_hh, w_hr


def second_order(run, cell, args, lengths, reverse):
    """The gradient of <dL/d(args), u> w.r.t. every argument, L = <outputs, w>."""
    gx, h0, c0, w_hh, b_hh, w_hr = args
    outs = run(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr)
    leaves = [t for t in args if t is not None]
    loss = sum((o * randn(*o.shape, seed=20 + k, dtype=o.dtype)).sum() for k, o in enumerate(outs))
    g = torch.autograd.grad(loss, leaves, create_graph=True)
    inner = sum((t * randn(*t.shape, seed=30 + k, dtype=t.dtype)).sum() for k, t in enumerate(g))
    return torch.autograd.grad(inner, leaves, allow_unused=True)


@pytest.mark.parametrize("apply", ["custom_op", "autograd_function"])
@pytest.mark.parametrize("cell,D,proj,reverse", [("lstm", 2, 3, False), ("lstm", 1, 0, True), ("gru", 2, 0, False),
                                                 ("rnn_tanh", 1, 0, False)])
def test_double_backward_of_the_kernel_op(apply, cell, D, proj, reverse, monkeypatch):
    """Both autograd paths of the kernel backends (the custom op graphs record and the
    autograd.Function eager runs), with two directions, a projection and lengths, against the reference."""
    plain_kernels.install(monkeypatch)
    from fusedrnn.ops import library, reference  # noqa: PLC0415
    via, kernels = ("op", plain_kernels.__name__) if apply == "custom_op" else ("function", plain_kernels)
    run = lambda *a: library.recurrence(*a, via=via)  # noqa: E731
    lengths = torch.tensor([T, 1, 2])
    args = layer_args(cell, D, torch.float64, proj)
    got = second_order(lambda *a: run(kernels, *a), cell, args, lengths, reverse)
    want = second_order(reference.recurrence, cell, args, lengths, reverse)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=F64_TOL)


@pytest.mark.parametrize("apply", ["custom_op", "autograd_function"])
@pytest.mark.parametrize("kind", ["jvp", "forward_ad", "vmap", "grad"])
def test_the_kernel_op_itself_refuses_transforms(apply, kind, monkeypatch):
    """Called directly (below fusedrnn.ops.recurrence, which runs the reference there), the kernel
    op raises an error naming fusedrnn, the backend and the fix rather than return zero tangents."""
    plain_kernels.install(monkeypatch)
    from fusedrnn.ops import library  # noqa: PLC0415
    via, kernels = ("op", plain_kernels.__name__) if apply == "custom_op" else ("function", plain_kernels)
    run = lambda *a: library.recurrence(*a, via=via)  # noqa: E731
    gx, h0, _, w_hh, b_hh, _ = (t.detach() if t is not None else None for t in layer_args("gru", 1, torch.float64))
    f = lambda gx: run(kernels, "gru", gx, h0, None, w_hh, b_hh, None, False)[0]  # noqa: E731
    match = r"fusedrnn: the kernels of support.plain_kernels .*backend='reference'"
    with pytest.raises(RuntimeError, match=match):
        if kind == "jvp":
            jvp(f, (gx,), (gx,))
        elif kind == "vmap":
            vmap(f)(gx.unsqueeze(0))
        elif kind == "grad":
            grad(lambda gx: f(gx).sum())(gx)
        else:
            with fwad.dual_level():
                f(fwad.make_dual(gx, gx))
