"""fusedrnn.LSTMCell / GRUCell / RNNCell against torch.nn's cells: values and the gradients of
the input, the given state and every parameter, against torch.nn run in float64; on the
reference backend, the kernel-backend path (tests/support/plain_kernels.py) and the Triton kernels
in the interpreter. Errors and edge cases are torch.nn's own."""
import pytest
import torch

from support import backend_params
import fusedrnn
from support import plain_kernels
from fusedrnn.ops import cell_step, library
from support.parity import compare_to_torch, make_pair

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
F64_TOL = 1e-11


@pytest.fixture(params=backend_params.ALL)
def backend(request, monkeypatch):
    return backend_params.resolve(request.param, monkeypatch)


@pytest.fixture
def steps_taken(monkeypatch):
    """Records every step the fused path runs, so a parity test cannot pass on torch.nn's own forward."""
    calls = []
    real = cell_step.step

    def spy(name, cell, *args):
        calls.append((name, cell))
        return real(name, cell, *args)
    monkeypatch.setattr(cell_step, "step", spy)
    return calls


def state(cell, B, H, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (B, H) if B is not None else (H,)
    h = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    if cell != "lstm":
        return h
    return h, torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()


def inputs(B, I, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (B, I) if B is not None else (I,)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()


def check(ours, ref, x, hx):
    err_ours, err_torch = compare_to_torch(ours, ref, x, hx)
    dtype = ours.weight_hh.dtype
    if dtype == torch.float64:
        assert err_ours < F64_TOL, err_ours
    else:
        assert err_ours <= 2 * err_torch + torch.finfo(dtype).eps, (err_ours, err_torch)


def dtypes_for(backend):
    return [torch.float32] if backend == "triton" else [torch.float64, torch.float32]


SIZES = [(3, 5, 7, True), (1, 1, 1, False), (4, 6, 9, True)]  # B, I, H, bias: odd, tiny, no bias


@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch_cells(cell, backend, steps_taken):
    for B, I, H, bias in SIZES[:1] if backend == "triton" else SIZES:  # the interpreter is slow
        for dtype in dtypes_for(backend):
            ours, ref = make_pair(cell, I, H, backend=backend, dtype=dtype, cells=True, bias=bias)
            check(ours, ref, inputs(B, I, dtype), state(cell, B, H, dtype))  # given state
            check(ours, ref, inputs(B, I, dtype), None)                       # torch's zero state
    assert steps_taken and {n for n, _ in steps_taken} == {backend} and {c for _, c in steps_taken} == {cell}


@pytest.mark.parametrize("cell", CELLS)
def test_unbatched(cell, backend, steps_taken):
    dtype = dtypes_for(backend)[0]
    ours, ref = make_pair(cell, 4, 5, backend=backend, dtype=dtype, cells=True)
    check(ours, ref, inputs(None, 4, dtype), state(cell, None, 5, dtype))
    check(ours, ref, inputs(None, 4, dtype), None)
    assert len(steps_taken) == 2  # one fused step per check
    out = ours(inputs(None, 4, dtype))
    assert all(t.shape == (5,) for t in (out if isinstance(out, tuple) else (out,)))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_decode_loop_carries_the_state(cell, backend):
    """Ten steps with the state fed back, as a decoder runs them, then backward through all."""
    dtype = dtypes_for(backend)[-1]
    ours, ref = make_pair(cell, 3, 6, backend=backend, dtype=dtype, cells=True)
    xs = torch.randn(10, 2, 3, dtype=dtype, requires_grad=True)

    def unroll(m):
        hx, outs = None, []
        for x in xs:
            hx = m(x, hx)
            outs.append(hx[0] if cell == "lstm" else hx)
        y = torch.stack(outs)
        return [y, *torch.autograd.grad((y * y.detach().sin()).sum(), [xs, *m.parameters()])]
    for a, b in zip(unroll(ours), unroll(ref)):
        torch.testing.assert_close(a, b)


# -- torch.nn's behaviour, errors included -------------------------------------------------

def raised(fn):
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


def bad_calls(cell, dtype, I=4, H=5):
    other = torch.float32 if dtype == torch.float64 else torch.float64
    x = torch.randn(3, I, dtype=dtype)
    h = torch.zeros(3, H, dtype=dtype)

    def st(*tensors):
        return tuple(tensors) if cell == "lstm" else tensors[0]
    calls = {
        "3-D input": (torch.randn(2, 3, I, dtype=dtype), None),
        "0-D input": (torch.tensor(1.0, dtype=dtype), None),
        "input size": (torch.randn(3, I + 1, dtype=dtype), None),
        "input dtype": (x.to(other), None),
        "state batch": (x, st(torch.zeros(2, H, dtype=dtype), torch.zeros(2, H, dtype=dtype))),
        "state size": (x, st(torch.zeros(3, H + 1, dtype=dtype), torch.zeros(3, H + 1, dtype=dtype))),
        "state rank 3": (x, st(torch.zeros(1, 3, H, dtype=dtype), torch.zeros(1, 3, H, dtype=dtype))),
        "state dtype": (x, st(h.to(other), h.to(other))),
        "unbatched input, batched state": (x[0], st(h, h)),
    }
    if cell == "lstm":
        calls["one state tensor"] = (x, h)
        calls["c of another batch"] = (x, (h, torch.zeros(2, H, dtype=dtype)))
        calls["three state tensors"] = (x, (h, h, h))
    return calls


@pytest.mark.parametrize("cell", CELLS)
def test_bad_input_raises_torchs_error(cell, backend):
    dtype = dtypes_for(backend)[0]
    ours, ref = make_pair(cell, 4, 5, backend=backend, dtype=dtype, cells=True)
    for what, (x, hx) in bad_calls(cell, dtype).items():
        assert raised(lambda: ours(x, hx)) == raised(lambda: ref(x, hx)), what


@pytest.mark.parametrize("cell", CELLS)
def test_an_empty_batch_is_torchs(cell, backend):
    dtype = dtypes_for(backend)[0]
    ours, ref = make_pair(cell, 4, 5, backend=backend, dtype=dtype, cells=True)
    x = torch.randn(0, 4, dtype=dtype)
    torch.testing.assert_close(ours(x), ref(x))
    h = torch.randn(0, 5, dtype=dtype)
    torch.testing.assert_close(ours(x, (h, h) if cell == "lstm" else h), ref(x, (h, h) if cell == "lstm" else h))


def test_unknown_nonlinearity_is_torchs_error(backend):
    dtype = dtypes_for(backend)[0]
    ours, ref = make_pair("rnn_tanh", 4, 5, backend=backend, dtype=dtype, cells=True)
    ours.nonlinearity = ref.nonlinearity = "gelu"
    x = torch.randn(2, 4, dtype=dtype)
    assert raised(lambda: ours(x)) == raised(lambda: ref(x)) == (RuntimeError, "Unknown nonlinearity: gelu")
    assert "'rnn_gelu' is not a cell fusedrnn runs" in fusedrnn.explain(ours, x)


def test_explicit_backend_that_cannot_run_raises():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="fusedrnn backend 'cuda' cannot run this call"):
        fusedrnn.GRUCell(3, 4, backend="cuda")(torch.randn(2, 3))


def test_auto_on_cpu_is_torchs_forward(monkeypatch, steps_taken):
    monkeypatch.delenv(fusedrnn.backends.ENV_VAR, raising=False)
    m = fusedrnn.LSTMCell(3, 4)
    x = torch.randn(2, 3)
    m(x)
    assert not steps_taken
    assert "would run backend 'torch'" in fusedrnn.explain(m, x)


def test_cpu_autocast_runs_torchs_cell_and_says_so(steps_taken, monkeypatch):
    for cls, tcls in [(fusedrnn.LSTMCell, torch.nn.LSTMCell), (fusedrnn.RNNCell, torch.nn.RNNCell)]:
        monkeypatch.setattr(fusedrnn.cells, "_warned", set())  # the warning comes once per backend name
        ours = cls(3, 4, backend="reference")
        ref = tcls(3, 4)
        ref.load_state_dict(ours.state_dict())
        x = torch.randn(2, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16), pytest.warns(RuntimeWarning, match="CPU autocast"):
            got, want = ours(x), ref(x)
            text = fusedrnn.explain(ours, x)
        torch.testing.assert_close(got, want, rtol=0, atol=0)  # the same implementation: identical
        assert "CPU autocast" in text
    assert not steps_taken


# -- the path a step takes --------------------------------------------------------------

def test_no_recorded_forward_without_autograd(monkeypatch):
    """With autograd recording nothing a step calls the backend's forward directly; with
    autograd it goes through the recorded forward (the custom op's, or eager's autograd.Function
    with the same implementation), whose backward the recurrence shares."""
    name = plain_kernels.install(monkeypatch)
    ops_called = []
    real = library._forward
    monkeypatch.setattr(library, "_forward", lambda *a: ops_called.append(a[9]) or real(*a))
    m = fusedrnn.LSTMCell(3, 4, backend=name)
    x = torch.randn(2, 3)
    with torch.no_grad():
        m(x)
    with torch.inference_mode():
        m(x)
    m.requires_grad_(False)
    m(x)  # nothing requires grad
    assert ops_called == []
    m.requires_grad_(True)
    h, c = m(x)
    assert ops_called == [True]  # need_grad
    (h.sum() + c.sum()).backward()
    assert m.weight_ih.grad is not None and m.bias_hh.grad is not None


def test_a_backends_fused_step_is_used_without_autograd_only(monkeypatch):
    """A kernel backend exporting step(...) gets the call in one piece where autograd records
    nothing; with autograd the step goes through the recurrence (its backward)."""
    name = plain_kernels.install(monkeypatch)
    fused = plain_kernels.install_step(monkeypatch)
    ours, ref = make_pair("lstm", 3, 4, backend=name, cells=True)
    x = torch.randn(2, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
    assert fused == ["lstm"]
    check(ours, ref, x.clone().requires_grad_(), None)
    assert fused == ["lstm"]
