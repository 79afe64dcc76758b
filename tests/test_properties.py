"""Property-based tests (hypothesis) over shapes and arguments.

- fusedrnn.LSTM/GRU/RNN(backend="reference") equals torch.nn in float64 for any layout;
- the kernel-backend path (tests/support/plain_kernels.py) and the Triton kernels under the CPU
  interpreter match torch.nn in float32 (no worse than twice torch's own float32 error);
- with a corrupted argument, fusedrnn raises exactly when torch.nn raises, with the same
  exception type, and fusedrnn.ops.recurrence only ever raises ValueError/TypeError/RuntimeError.
"""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence

import fusedrnn
from support import plain_kernels
from fusedrnn import backends
from support.parity import compare_to_torch, make_inputs, make_pair, make_state

FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


@st.composite
def configs(draw, projections=True):
    cell = draw(st.sampled_from(CELLS))
    H = draw(st.integers(1, 5))
    return dict(
        cell=cell, I=draw(st.integers(1, 4)), H=H, layers=draw(st.integers(1, 2)), bidir=draw(st.booleans()),
        bias=draw(st.booleans()), batch_first=draw(st.booleans()),
        proj=draw(st.integers(0, H - 1)) if cell == "lstm" and projections else 0,
        T=draw(st.integers(1, 4)), B=draw(st.integers(1, 3)),
        kind=draw(st.sampled_from(["padded", "sorted", "unsorted", "unbatched"])), hx=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)))


def build(c, backend, dtype):
    kw = dict(num_layers=c["layers"], bidirectional=c["bidir"], bias=c["bias"], batch_first=c["batch_first"])
    if c["proj"]:
        kw["proj_size"] = c["proj"]
    torch.manual_seed(c["seed"])
    ours, ref = make_pair(c["cell"], c["I"], c["H"], backend=backend, dtype=dtype, **kw)
    unbatched = c["kind"] == "unbatched"
    x = make_inputs(c["I"], c["B"], c["T"], dtype, batch_first=c["batch_first"], unbatched=unbatched,
                    packed=c["kind"] if c["kind"] in ("sorted", "unsorted") else None, seed=c["seed"])
    hx = make_state(c["cell"], ours, c["B"], dtype, unbatched=unbatched, seed=c["seed"] + 1) if c["hx"] else None
    return ours, ref, x, hx


@settings(max_examples=60, deadline=None)
@given(configs())
def test_reference_equals_torch_nn_float64(c):
    ours, ref, x, hx = build(c, "reference", torch.float64)
    err_ours, _ = compare_to_torch(ours, ref, x, hx)
    assert err_ours < 1e-10


@pytest.fixture
def kernel_backend(monkeypatch):
    return plain_kernels.install(monkeypatch)


def float32_check(c, backend):
    ours, ref, x, hx = build(c, backend, torch.float32)
    err_ours, err_torch = compare_to_torch(ours, ref, x, hx)
    assert err_ours <= 2 * err_torch + 1e-5, (err_ours, err_torch)


@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURE_OK)
@given(c=configs(projections=False))
def test_kernel_backend_path_matches_torch_nn(kernel_backend, c):
    float32_check(c, kernel_backend)


def triton_reason():
    return backends.why_not("triton", torch.device("cpu"), "lstm", torch.float32, 8)


@pytest.mark.skipif(triton_reason() is not None, reason=f"triton cannot run on the CPU here: {triton_reason()}")
@settings(max_examples=12, deadline=None)
@given(c=configs(projections=False))
def test_triton_interpreter_matches_torch_nn(c):
    float32_check(c, "triton")


# -- corrupted arguments ----------------------------------------------------------------

CORRUPTIONS = ["feature", "hx_batch", "hx_layers", "hx_size", "cx_size", "hx_dtype", "input_dtype", "ndim4",
               "ndim1", "hx_rank", "hx_not_tuple", "empty_time", "empty_batch"]


def corrupt(c, ours, x, hx, how):
    """A copy of (x, hx) with one thing wrong; PackedSequence inputs keep their layout."""
    g = torch.Generator().manual_seed(c["seed"])
    D = 2 if c["bidir"] else 1
    P = c["proj"] or c["H"]
    unbatched = c["kind"] == "unbatched"
    if hx is None:
        hx = make_state(c["cell"], ours, c["B"], torch.float64, unbatched=unbatched)
    h, cx = hx if c["cell"] == "lstm" else (hx, None)
    data = x.data if isinstance(x, PackedSequence) else x
    rewrap = (lambda d: PackedSequence(d, x.batch_sizes, x.sorted_indices, x.unsorted_indices)) \
        if isinstance(x, PackedSequence) else (lambda d: d)
    lead = () if unbatched else (h.shape[1],)
    if how == "feature":
        x = rewrap(torch.randn(*data.shape[:-1], c["I"] + 1, generator=g, dtype=torch.float64))
    elif how == "hx_batch" and not unbatched:
        h = torch.zeros(h.shape[0], h.shape[1] + 1, P, dtype=torch.float64)
    elif how == "hx_layers":
        h = torch.zeros(c["layers"] * D + 1, *lead, P, dtype=torch.float64)
    elif how == "hx_size":
        h = torch.zeros(c["layers"] * D, *lead, P + 1, dtype=torch.float64)
    elif how == "cx_size" and cx is not None:
        cx = torch.zeros(c["layers"] * D, *lead, c["H"] + 1, dtype=torch.float64)
    elif how == "hx_dtype":
        h = h.float()
    elif how == "input_dtype":
        x = rewrap(data.float())
    elif how == "ndim4" and not isinstance(x, PackedSequence):
        x = x.unsqueeze(0)
    elif how == "ndim1" and not isinstance(x, PackedSequence):
        x = x.reshape(-1)
    elif how == "hx_rank":
        h = h.unsqueeze(0) if unbatched else h[0]
    elif how == "hx_not_tuple" and cx is not None:
        return x, h
    elif how == "empty_time" and not isinstance(x, PackedSequence):
        x = x[:0] if not c["batch_first"] or unbatched else x[:, :0]
    elif how == "empty_batch" and not isinstance(x, PackedSequence) and not unbatched:
        x = x[:, :0] if not c["batch_first"] else x[:0]
        h = h[:, :0]
        cx = cx[:, :0] if cx is not None else None
    hx = (h, cx) if cx is not None else h
    return x, hx


def outcome(module, x, hx):
    try:
        y, h = module(x, hx)
    except Exception as e:  # noqa: BLE001  (we compare whatever torch raises)
        return e, None
    y = y.data if isinstance(y, PackedSequence) else y
    return None, [y] + (list(h) if isinstance(h, tuple) else [h])


@settings(max_examples=150, deadline=None)
@given(c=configs(), how=st.sampled_from(CORRUPTIONS))
def test_bad_arguments_fail_like_torch(c, how):
    ours, ref, x, hx = build(c, "reference", torch.float64)
    x, hx = corrupt(c, ours, x, hx, how)
    theirs, want = torch_outcome(ref, x, hx)
    mine, got = outcome(ours, x, hx)
    if theirs is None:
        assert mine is None, f"fusedrnn raised {mine!r} where torch.nn ran"
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    else:
        assert mine is not None, f"torch.nn raised {theirs!r}, fusedrnn did not"
        assert type(mine) is type(theirs), (mine, theirs)


def torch_outcome(ref, x, hx):
    """What torch.nn does, except where it is unsafe to ask: torch.nn.LSTM skips its own
    argument checks for a PackedSequence (GRU and RNN do not) and hands bad shapes to its
    kernel, which fails with an unrelated RuntimeError ("get_mkldnn_dtype: unsupported data
    type") or crashes the process (segmentation fault, seen with torch 2.13 on the CPU).
    fusedrnn applies torch's checks there too, so expect what those checks raise. A state that
    is not a tuple, or has fewer than 3 dims, torch refuses before its kernel reads anything
    (TypeError, IndexError): ask torch itself then."""
    low_rank = hx is not None and (not isinstance(hx, tuple) or min(h.dim() for h in hx) < 3)
    if isinstance(ref, torch.nn.LSTM) and isinstance(x, PackedSequence) and not low_rank:
        try:
            if hx is None:
                B, D = int(x.batch_sizes[0]), 2 if ref.bidirectional else 1
                z = lambda n: torch.zeros(ref.num_layers * D, B, n, dtype=x.data.dtype)  # noqa: E731
                checked = (z(ref.proj_size or ref.hidden_size), z(ref.hidden_size))
            else:
                checked = ref.permute_hidden(hx, x.sorted_indices)
            ref.check_forward_args(x.data, checked, x.batch_sizes)
        except Exception as e:  # noqa: BLE001
            return e, None
    return outcome(ref, x, hx)


@st.composite
def recurrence_args(draw):
    """Arguments for fusedrnn.ops.recurrence, each possibly wrong in one way."""
    cell = draw(st.sampled_from(CELLS))
    G = fusedrnn.ops.GATES[cell]
    T, B, H = draw(st.integers(0, 3)), draw(st.integers(0, 3)), draw(st.integers(1, 3))
    f32 = dict(dtype=torch.float32)
    shapes = dict(gx=(T, B, G * H), h0=(B, H), c0=(B, H) if cell == "lstm" else None, w_hh=(G * H, H),
                  b_hh=(G * H,) if draw(st.booleans()) else None)
    args = {k: (torch.randn(*s, **f32) if s is not None else None) for k, s in shapes.items()}
    lengths = torch.randint(1, max(T, 1) + 1, (B,)) if draw(st.booleans()) else None
    fault = draw(st.sampled_from(["none", "shape", "dtype", "lengths_value", "lengths_dtype", "c0", "cell",
                                  "gx_int", "ndim"]))
    victim = draw(st.sampled_from(["gx", "h0", "w_hh", "b_hh", "c0"]))
    if fault == "shape" and args[victim] is not None:
        args[victim] = torch.randn(*[s + 1 for s in args[victim].shape], **f32)
    elif fault == "dtype" and args[victim] is not None:
        args[victim] = args[victim].double()
    elif fault == "lengths_value" and B:
        lengths = torch.full((B,), draw(st.sampled_from([0, T + 1, -3])))
    elif fault == "lengths_dtype" and B:
        lengths = torch.ones(B, dtype=draw(st.sampled_from([torch.float32, torch.int16, torch.bool])))
    elif fault == "c0":
        args["c0"] = None if cell == "lstm" else torch.zeros(B, H)
    elif fault == "cell":
        cell = "lstm_peephole"
    elif fault == "gx_int":
        args["gx"] = torch.zeros(T, B, G * H, dtype=torch.int64)
    elif fault == "ndim":
        args["gx"] = args["gx"].reshape(-1)
    return cell, args, lengths, draw(st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE_OK)
@given(spec=recurrence_args(), use_kernels=st.booleans())
def test_recurrence_raises_only_clean_errors(kernel_backend, spec, use_kernels):
    cell, args, lengths, reverse = spec
    backend = kernel_backend if use_kernels else "reference"
    try:
        out = fusedrnn.ops.recurrence(cell, **args, lengths=lengths, reverse=reverse, backend=backend)
    except (ValueError, TypeError, RuntimeError) as e:
        assert str(e)  # a message, not a bare exception
        return
    T, B, GH = args["gx"].shape
    assert out[0].shape == (T, B, GH // fusedrnn.ops.GATES[cell]) and len(out) == (3 if cell == "lstm" else 2)
