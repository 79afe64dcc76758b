"""Complex modules and cells: torch.nn computes LSTM, GRU and tanh RNNs in complex (torch 2.13,
CPU), so the reference backend does too — values and every gradient against torch.nn in
complex128 — and a relu RNN raises torch.nn's own error. The kernel backends compute real
dtypes only and refuse complex with an error naming fusedrnn, the backend and the dtype."""
import copy

import pytest
import torch

from support import backend_params
from support.parity import make_pair

CELLS = ["lstm", "gru", "rnn_tanh"]
F64_TOL = 1e-11


def crandn(*shape, seed, scale=0.5):
    """Complex normal values; small, because complex sigmoid and tanh have poles (at iπ and iπ/2)
    near which every result, torch.nn's in complex128 included, is ill-conditioned."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                                 torch.randn(*shape, generator=g, dtype=torch.float64))


def run(module, x, hx):
    """Outputs and the gradients of a real loss (fixed complex weights) w.r.t. x, hx and every parameter."""
    out = module(x, hx)  # a cell's h or (h, c), a module's (y, h) or (y, (h, c))
    outs = [out] if isinstance(out, torch.Tensor) else [out[0], *(out[1] if isinstance(out[1], tuple) else [out[1]])]
    loss = sum((o * crandn(*o.shape, seed=7 + k).to(o.dtype)).real.sum() for k, o in enumerate(outs))
    leaves = [x, *(hx if isinstance(hx, tuple) else (hx,)), *module.parameters()]
    return [o.detach() for o in outs] + list(torch.autograd.grad(loss, leaves))


def leaf(t, dtype):
    return t.detach().to(dtype).requires_grad_()


def inputs(cell, shape_x, shape_h, dtype):
    x = leaf(crandn(*shape_x, seed=0), dtype)
    h = leaf(crandn(*shape_h, seed=1), dtype)
    return x, ((h, leaf(crandn(*shape_h, seed=2), dtype)) if cell == "lstm" else h)


def err(a_list, b_list):
    """The largest error of a tensor of a_list against b_list, relative to that tensor's largest value
    (at least 1)."""
    return max((a.to(torch.complex128) - b).abs().max().item() / max(1.0, b.abs().max().item())
               for a, b in zip(a_list, b_list))


def errors(ours, ref, shape_x, shape_h, cell):
    """fusedrnn's and torch.nn's distance to torch.nn in complex128, in ours' dtype."""
    dtype = next(ours.parameters()).dtype
    truth = run(copy.deepcopy(ref).to(torch.complex128), *inputs(cell, shape_x, shape_h, torch.complex128))
    got = run(ours, *inputs(cell, shape_x, shape_h, dtype))
    theirs = run(ref, *inputs(cell, shape_x, shape_h, dtype))
    assert [t.dtype for t in got] == [t.dtype for t in theirs]
    return err(got, truth), err(theirs, truth)


def check_against_torch(make, shape_x, shape_h, cell, dtype):
    """complex128: ours equals torch.nn's to rounding. complex64: both errors are rounding noise
    of one size (the ratio of one draw ranges from 0.2 to 5), so they are summed over draws of
    the parameters before ours is held to twice torch.nn's."""
    draws = 1 if dtype == torch.complex128 else 6
    e_ours = e_torch = 0.0
    for seed in range(draws):
        torch.manual_seed(seed)
        ours, ref = make()
        e = errors(ours, ref, shape_x, shape_h, cell)
        e_ours, e_torch = e_ours + e[0], e_torch + e[1]
    if dtype == torch.complex128:
        assert e_ours < F64_TOL, e_ours
    else:
        assert e_ours <= 2 * e_torch + torch.finfo(torch.float32).eps, (e_ours, e_torch)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_complex_modules_match_torch(cell, dtype, bidirectional):
    D = 2 if bidirectional else 1
    check_against_torch(lambda: make_pair(cell, 3, 5, dtype=dtype, num_layers=2, bidirectional=bidirectional),
                        (4, 3, 3), (2 * D, 3, 5), cell, dtype)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_cells_match_torch(cell, dtype):
    check_against_torch(lambda: make_pair(cell, 3, 5, dtype=dtype, cells=True), (3, 3), (3, 5), cell, dtype)


def raised(fn):
    with pytest.raises(Exception) as info:  # noqa: PT011  (compared with torch.nn's below)
        fn()
    return info.type, str(info.value)


@pytest.mark.parametrize("cells", [False, True])
def test_complex_relu_rnn_raises_torchs_error(cells):
    ours, ref = make_pair("rnn_relu", 3, 5, dtype=torch.complex64, cells=cells)
    x = crandn(2, 3, seed=0).to(torch.complex64)
    assert raised(lambda: ours(x)) == raised(lambda: ref(x))


@pytest.mark.parametrize("param", ["kernels", pytest.param("triton", marks=backend_params.needs_triton)])
@pytest.mark.parametrize("cells", [False, True])
def test_kernel_backends_refuse_complex(param, cells, monkeypatch):
    backend = backend_params.resolve(param, monkeypatch)
    ours, _ = make_pair("gru", 3, 5, backend=backend, dtype=torch.complex64, cells=cells)
    x = crandn(2, 3, seed=0).to(torch.complex64)
    with pytest.raises(RuntimeError, match=r"fusedrnn backend 'triton' cannot run this call: .*complex64"):
        ours(x)
