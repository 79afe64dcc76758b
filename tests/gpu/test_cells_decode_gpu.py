"""Cells and the decode step on a CUDA device: fusedrnn.LSTMCell/GRUCell/RNNCell on every
fused backend against torch.nn's cells (values and every gradient, float64 truth), CUDA
autocast, and a 2-layer decode step captured in a CUDA graph (fusedrnn.CapturedStep) and
replayed against eager calls, for the module with T=1 and for a stack of cells.

Skipped without CUDA; a fused backend that cannot run here fails with its reason.
"""
import copy

import pytest
import torch
from torch import nn

import fusedrnn
from fusedrnn import backends

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEV = torch.device("cuda")
FUSED = ["cuda", "triton"]
CELLS = {"lstm": (fusedrnn.LSTMCell, nn.LSTMCell, {}), "gru": (fusedrnn.GRUCell, nn.GRUCell, {}),
         "rnn_tanh": (fusedrnn.RNNCell, nn.RNNCell, {}),
         "rnn_relu": (fusedrnn.RNNCell, nn.RNNCell, {"nonlinearity": "relu"})}


def need(backend, dtype=torch.float32):
    reason = backends.why_not(backend, DEV, "lstm", dtype, 64)
    if reason is not None:
        pytest.fail(f"backend {backend!r} cannot run on this GPU: {reason}")


def cell_pair(cell, backend, I, H, dtype):
    ours_cls, torch_cls, kw = CELLS[cell]
    torch.manual_seed(0)
    ours = ours_cls(I, H, backend=backend, device=DEV, dtype=dtype, **kw)
    ref = torch_cls(I, H, device=DEV, dtype=dtype, **kw)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def outs_and_grads(module, x, hx):
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    hx = tuple(h.detach().requires_grad_() for h in hx) if isinstance(hx, tuple) else hx.detach().requires_grad_()
    out = module(x, hx)
    outs = list(out) if isinstance(out, tuple) else [out]
    g = torch.Generator(device=DEV).manual_seed(3)
    loss = sum((o.double() * torch.randn(o.shape, device=DEV, generator=g, dtype=torch.float64)).sum() for o in outs)
    leaves = [x, *(hx if isinstance(hx, tuple) else (hx,)), *module.parameters()]
    return [o.detach() for o in outs] + list(torch.autograd.grad(loss, leaves))


def err(a_list, b_list):
    return max(((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()
               for a, b in zip(a_list, b_list))


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("B,I,H", [(3, 17, 33), (1, 64, 256), (64, 128, 512)])
def test_cell_matches_torch_in_every_gradient(backend, dtype, cell, B, I, H):
    """No worse than twice torch.nn's own error in the same dtype, against float64."""
    need(backend, dtype)
    ours, ref = cell_pair(cell, backend, I, H, dtype)
    truth = copy.deepcopy(ref).double()
    x = torch.randn(B, I, device=DEV)
    h = 0.5 * torch.randn(B, H, device=DEV)
    hx = (h, 0.5 * torch.randn(B, H, device=DEV)) if cell == "lstm" else h
    low = lambda t: tuple(s.to(dtype) for s in t) if isinstance(t, tuple) else t.to(dtype)  # noqa: E731
    want = outs_and_grads(truth, x.double(), tuple(s.double() for s in hx) if cell == "lstm" else hx.double())
    got, theirs = outs_and_grads(ours, x.to(dtype), low(hx)), outs_and_grads(ref, x.to(dtype), low(hx))
    tol = max(2 * err(theirs, want), {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype])
    assert err(got, want) <= tol, (err(got, want), err(theirs, want))


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=str)
def test_cell_under_cuda_autocast_runs_fused_in_low_precision(backend, low):
    need(backend, low)
    ours, ref = cell_pair("lstm", backend, 32, 64, torch.float32)
    x = torch.randn(4, 32, device=DEV)
    with torch.autocast("cuda", dtype=low):
        got, want = ours(x), ref(x)
    assert [t.dtype for t in got] == [t.dtype for t in want]
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), rtol=5e-2, atol=5e-2)


# -- the decode step, eager and captured in a CUDA graph ----------------------------------

def decode_models(backend, H, dtype):
    torch.manual_seed(0)
    module = fusedrnn.LSTM(H, H, num_layers=2, batch_first=True, backend=backend, device=DEV, dtype=dtype).eval()
    cells = [fusedrnn.LSTMCell(H, H, backend=backend, device=DEV, dtype=dtype) for _ in range(2)]
    for k, c in enumerate(cells):
        c.load_state_dict({n: getattr(module, f"{n}_l{k}") for n in c.state_dict()})
    return module, cells


def cell_step(cells):
    def step(x, state):          # x (B, H); state: h, c (2, B, H)
        h, c = state
        hs, cs, inp = [], [], x
        for k, cell in enumerate(cells):
            hk, ck = cell(inp, (h[k], c[k]))
            hs.append(hk)
            cs.append(ck)
            inp = hk
        return inp, (torch.stack(hs), torch.stack(cs))
    return step


@pytest.mark.parametrize("backend", ["auto", "torch", *FUSED])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("B,H", [(1, 1024), (8, 512)])
def test_captured_decode_step_replays_like_eager(backend, dtype, B, H):
    if backend in FUSED:
        need(backend, dtype)
    module, cells = decode_models(backend, H, dtype)
    xs = torch.randn(12, B, 1, H, device=DEV, dtype=dtype)
    h0 = 0.5 * torch.randn(2, B, H, device=DEV, dtype=dtype)
    c0 = 0.5 * torch.randn(2, B, H, device=DEV, dtype=dtype)
    for step, shape in [(module, lambda x: x), (cell_step(cells), lambda x: x[:, 0])]:
        with torch.no_grad():
            state, eager = (h0, c0), []
            for x in xs:
                y, state = step(shape(x), state)
                eager.append(y.clone())
            captured = fusedrnn.CapturedStep(step, shape(xs[0]), (h0, c0))
            replayed = [captured(shape(x)).clone() for x in xs]
        torch.cuda.synchronize()
        # the same kernels on the same data (cuBLAS may pick another GEMM algorithm under
        # capture: torch's default tolerances of the dtype, not bitwise)
        for a, b in zip(replayed, eager):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(captured.state, state)
        captured.reset((h0, c0))  # a new sequence from the same state replays the same tokens
        torch.testing.assert_close(captured(shape(xs[0])), eager[0])


def test_captioning_example_samples_the_same_through_a_captured_graph():
    """examples/captioning.py --graph: greedy tokens replayed from a CUDA graph equal eager ones."""
    import pathlib  # noqa: PLC0415
    import sys  # noqa: PLC0415
    # tests/support/example_scripts.py puts examples/ on the path too: captioning imports its helpers from there
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from support.example_scripts import load_example  # noqa: PLC0415
    captioning = load_example("captioning")
    m = captioning.main(["--quick", "--graph", "--steps", "100", "--show", "0", "--no-progress"])
    model = m["model"]
    images, captions = captioning.make_batch(64, 1, 16, torch.Generator().manual_seed(5))
    images = images.to(DEV)
    eager = captioning.sample(model, images, captions.shape[1], graph=False)
    graphed = captioning.sample(model, images, captions.shape[1], graph=True)
    assert torch.equal(eager, graphed)
