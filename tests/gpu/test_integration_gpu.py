"""PyTorch integration on a CUDA device (issue 5): autocast, determinism, torch.compile,
the cuDNN weight-chunk warning, memory and the saved-for-backward footprint, bad input.

Skipped without CUDA; runs for every fused backend ("triton", "cuda") that can run here.
"""
import warnings

import pytest
import torch

import fusedrnn
from fusedrnn import backends, diagnostics
from fusedrnn.ops import GATES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEV = torch.device("cuda")
CLASSES = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn_tanh": fusedrnn.RNN}
TWINS = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}


def fused_backends():
    if not torch.cuda.is_available():
        return []
    return [n for n in ("triton", "cuda") if backends.why_not(n, DEV, "lstm", torch.float16, 64) is None]


BACKENDS = fused_backends() or ["triton"]  # none runnable: the tests below report why


def need(backend):
    reason = backends.why_not(backend, DEV, "lstm", torch.float16, 64)
    if reason is not None:
        pytest.fail(f"backend {backend!r} cannot run on this GPU: {reason}")


def pair(cell, backend, H=64, **kw):
    torch.manual_seed(0)
    ours = CLASSES[cell](32, H, backend=backend, device=DEV, **kw)
    ref = TWINS[cell](32, H, device=DEV, **kw)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def outs_and_grads(module, x):
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    y, h = module(x)
    outs = [y] + (list(h) if isinstance(h, tuple) else [h])
    g = torch.Generator(device=DEV).manual_seed(3)
    loss = sum((o.float() * torch.randn(o.shape, device=DEV, generator=g)).sum() for o in outs)
    loss.backward()
    return [o.detach() for o in outs] + [x.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cell", list(CLASSES))
def test_cuda_autocast_runs_fused_path_in_low_precision(backend, low, cell, monkeypatch):
    need(backend)
    mod = backends.kernel_module(backend)
    seen, real = [], mod.forward

    def spy(cell_, gx, h0, c0, w_hh, *rest):
        seen.append({gx.dtype, h0.dtype, w_hh.dtype})
        return real(cell_, gx, h0, c0, w_hh, *rest)

    monkeypatch.setattr(mod, "forward", spy)
    ours, ref = pair(cell, backend, num_layers=2)
    x = torch.randn(50, 16, 32, device=DEV)
    truth = outs_and_grads(ref, x)  # float32 without autocast
    with torch.autocast("cuda", dtype=low):
        got = outs_and_grads(ours, x)
        want = outs_and_grads(ref, x)
    assert seen and all(s == {low} for s in seen)
    n_out = 3 if cell == "lstm" else 2
    assert [t.dtype for t in got[:n_out]] == [t.dtype for t in want[:n_out]] == [low] * n_out
    for g, w, t in zip(got, want, truth):
        err_ours, err_torch = (g.float() - t).abs().max().item(), (w.float() - t).abs().max().item()
        assert err_ours <= 2 * err_torch + 1e-3, (err_ours, err_torch)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", list(CLASSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_runs_are_bitwise_identical(backend, cell, dtype):
    need(backend)
    results = []
    for _ in range(3):
        ours, _ = pair(cell, backend, H=128, num_layers=2, bidirectional=True, dtype=dtype)
        x = torch.randn(64, 32, 32, device=DEV, dtype=dtype, generator=torch.Generator(device=DEV).manual_seed(1))
        results.append(outs_and_grads(ours, x))
        torch.cuda.synchronize()
    for run in results[1:]:
        for a, b in zip(results[0], run):
            assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_torch_compile_fullgraph_inductor(backend):
    need(backend)
    torch._dynamo.reset()
    ours, _ = pair("lstm", backend, num_layers=2)
    x = torch.randn(20, 8, 32, device=DEV)
    compiled = torch.compile(ours, fullgraph=True)
    got, want = outs_and_grads(compiled, x), outs_and_grads(ours, x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_contiguous_chunk_warning_with_scattered_weights(backend):
    need(backend)
    ours, ref = pair("lstm", backend, num_layers=2)
    for m in (ours, ref):  # what DDP / optimizers / .to() can leave behind: one storage per weight
        for p in m.parameters():
            p.data = p.data.clone()
    x = torch.randn(10, 4, 32, device=DEV)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref(x)
    assert any("contiguous chunk" in str(w.message) for w in caught), "control: cuDNN should warn"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs_and_grads(ours, x)
    assert not [w for w in caught if "contiguous chunk" in str(w.message)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_training_loop_memory_is_flat(backend):
    need(backend)
    ours, _ = pair("lstm", backend, H=256, num_layers=2)
    opt = torch.optim.SGD(ours.parameters(), lr=1e-3)
    x = torch.randn(64, 32, 32, device=DEV)
    for it in range(200):
        if it == 20:
            torch.cuda.synchronize()
            start = torch.cuda.memory_allocated()
        y, _ = ours(x)
        y.square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == start


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", list(CLASSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_saved_bytes_match_prediction(backend, cell, dtype):
    need(backend)
    ours, _ = pair(cell, backend, H=256, dtype=dtype)
    x = torch.randn(64, 16, 32, device=DEV, dtype=dtype)
    rep = diagnostics.saved_bytes(lambda: ours(x), preexisting=[x])
    want = diagnostics.kernel_saved_bytes(backends.KERNEL_BACKENDS[backend], cell, 64, 16, 256, dtype)
    per_token = diagnostics.saved_bytes_per_token(ours, x)
    print(f"{backend} {cell} {dtype}: {per_token:.0f} saved bytes per token per layer (H=256)")
    assert rep.activations == want


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_bad_input_raises_before_launch(backend, monkeypatch):
    need(backend)
    mod = backends.kernel_module(backend)
    monkeypatch.setattr(mod, "forward", lambda *a, **k: pytest.fail("a kernel was launched"))
    G, H, B = GATES["lstm"], 64, 512
    T = 2**31 // (B * G * H) + 1
    gx = torch.zeros(1, 1, 1, device=DEV).expand(T, B, G * H)
    z = torch.zeros(B, H, device=DEV)
    with pytest.raises(ValueError, match="32-bit offsets"):
        fusedrnn.ops.recurrence("lstm", gx, z, z, torch.zeros(G * H, H, device=DEV), None, backend=backend)
    with pytest.raises(RuntimeError, match="w_hh is on cpu but gx is on cuda"):
        fusedrnn.ops.recurrence("lstm", torch.zeros(3, 2, G * H, device=DEV), z[:2], z[:2], torch.zeros(G * H, H),
                                None, backend=backend)
    with pytest.raises(ValueError, match="lengths must lie"):
        fusedrnn.ops.recurrence("lstm", torch.zeros(3, 2, G * H, device=DEV), z[:2], z[:2],
                                torch.zeros(G * H, H, device=DEV), None, lengths=torch.tensor([0, 3]), backend=backend)
    m = fusedrnn.LSTM(32, H, backend=backend)  # weights on the CPU, input on the GPU
    with pytest.raises(RuntimeError, match="Input and parameter tensors are not at the same device"):
        m(torch.zeros(3, 2, 32, device=DEV))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_cuda_nonfinite_inputs_propagate_like_cudnn(backend, cell):
    need(backend)
    kw = {"nonlinearity": "relu"} if cell == "rnn_relu" else {}
    ours, ref = pair(cell.replace("_relu", "_tanh"), backend, **kw)
    x = torch.randn(2, 32, 12, device=DEV).permute(2, 0, 1)  # channels-strided (T=12, B=2)
    x[3, 0, 5], x[6, 1, 0] = float("nan"), float("inf")
    for a, b in zip(outs_and_grads(ours, x), outs_and_grads(ref, x)):
        assert torch.equal(a.isnan(), b.isnan())
        torch.testing.assert_close(a, b, equal_nan=True, atol=1e-4, rtol=1e-3)
