"""Bidirectional layers and LSTM projections on the kernel-backend path (contract v2), with
tests/support/plain_kernels.py standing in for the kernels in three declarations: v2 (projections,
both directions in one call), one direction per call, and neither (one direction per call
and no projection). Module parity with torch.nn (values and every gradient, float64),
what reaches the backend, one input GEMM per layer, the fused step at T=1, explain()."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fusedrnn
from support import plain_kernels
from fusedrnn import backends
from fusedrnn.ops import GATES
from support.parity import compare_to_torch, make_inputs, make_pair, make_state

F64_TOL = 1e-11
DECLARATIONS = {"v2": {}, "one direction per call": {"directions": 1}, "neither": {"directions": 1, "projections": False}}


@pytest.fixture
def calls(monkeypatch):
    """Installs a declaration (request it with calls.install(...)) and records the directions
    (h0.dim() - 1) and projection of every forward call the backend gets."""
    seen = []
    real = plain_kernels.forward

    def forward(cell, gx, h0, *rest, w_hr=None):
        seen.append((h0.dim() - 1, w_hr is not None))
        return real(cell, gx, h0, *rest, **({"w_hr": w_hr} if w_hr is not None else {}))
    monkeypatch.setattr(plain_kernels, "forward", forward)

    class Calls(list):
        def install(self, declaration):
            return plain_kernels.install(monkeypatch, **DECLARATIONS[declaration])
    calls = Calls()
    calls.seen = seen
    return calls


LAYERS = [("lstm", 0), ("lstm", 3), ("gru", 0), ("rnn_tanh", 0)]


@pytest.mark.sampled
@pytest.mark.parametrize("declaration", list(DECLARATIONS))
@pytest.mark.parametrize("cell,proj", LAYERS, ids=[f"{c}-P{p}" for c, p in LAYERS])
@pytest.mark.parametrize("packed", [None, "unsorted"])
def test_bidirectional_two_layers_match_torch(calls, declaration, cell, proj, packed):
    name = calls.install(declaration)
    kw = dict(proj_size=proj) if proj else {}
    ours, ref = make_pair(cell, 4, 5, backend=name, num_layers=2, bidirectional=True,
                          batch_first=packed is None, dropout=0.0, **kw)
    x = make_inputs(4, 3, 6, torch.float64, packed=packed, batch_first=packed is None)
    if proj and declaration == "neither":
        with pytest.raises(RuntimeError, match="fusedrnn backend 'triton' cannot run this call: .*projection"):
            ours(x)
        return
    for hx in (make_state(cell, ours, 3, torch.float64), None):
        err, _ = compare_to_torch(ours, ref, x, hx)
        assert err < F64_TOL, err
    both = declaration == "v2"
    assert calls.seen and set(calls.seen) == {(2 if both else 1, bool(proj))}
    assert len(calls.seen) == 2 * 2 * (1 if both else 2)  # 2 runs (given, default state) x 2 layers x calls


@pytest.mark.parametrize("declaration", ["v2", "one direction per call"])
@pytest.mark.parametrize("packed", [None, "unsorted"])
def test_dropout_between_bidirectional_layers_draws_torchs_masks(calls, declaration, packed):
    name = calls.install(declaration)
    ours, ref = make_pair("lstm", 4, 6, backend=name, num_layers=3, bidirectional=True, proj_size=2, dropout=0.4)
    ours.train(), ref.train()
    err, _ = compare_to_torch(ours, ref, make_inputs(4, 3, 5, torch.float64, packed=packed), None, seed=7)
    assert err < F64_TOL, err


def test_unbatched_bidirectional_projection(calls):
    name = calls.install("v2")
    ours, ref = make_pair("lstm", 3, 4, backend=name, num_layers=2, bidirectional=True, proj_size=3)
    x = make_inputs(3, None, 5, torch.float64, unbatched=True)
    err, _ = compare_to_torch(ours, ref, x, make_state("lstm", ours, None, torch.float64, unbatched=True))
    assert err < F64_TOL, err
    assert set(calls.seen) == {(2, True)}


@pytest.mark.parametrize("declaration", ["v2", "one direction per call"])
def test_unidirectional_projection_with_lengths(calls, declaration):
    name = calls.install(declaration)
    ours, ref = make_pair("lstm", 4, 6, backend=name, num_layers=2, proj_size=2)
    x = make_inputs(4, 5, 7, torch.float64, packed="sorted")
    err, _ = compare_to_torch(ours, ref, x, make_state("lstm", ours, 5, torch.float64))
    assert err < F64_TOL, err
    assert set(calls.seen) == {(1, True)}


def test_float32_bidirectional_projection_within_torch_error(calls):
    name = calls.install("v2")
    ours, ref = make_pair("lstm", 4, 6, backend=name, num_layers=2, bidirectional=True, proj_size=4,
                          dtype=torch.float32)
    x = make_inputs(4, 3, 5, torch.float32, packed="unsorted")
    err, err_torch = compare_to_torch(ours, ref, x, make_state("lstm", ours, 3, torch.float32))
    assert err <= 2 * err_torch + torch.finfo(torch.float32).eps, (err, err_torch)


class InputGemms(TorchDispatchMode):
    """Counts the matrix products that make at least T*B*G*H outputs: the input projections
    (a recurrence step makes D*B*G*H); records each one's output width."""

    MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"}

    def __init__(self, at_least):
        super().__init__()
        self.at_least, self.widths = at_least, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._schema.name in self.MATMULS and out.numel() >= self.at_least:
            self.widths.append(out.shape[-1])
        return out


@pytest.mark.parametrize("declaration", ["v2", "one direction per call", "reference"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_one_input_gemm_per_bidirectional_layer(calls, declaration, cell):
    name = "reference" if declaration == "reference" else calls.install(declaration)
    T, B, H, L = 6, 3, 5, 3
    rnn = make_pair(cell, 4, H, backend=name, num_layers=L, bidirectional=True)[0]
    x = torch.randn(T, B, 4, dtype=torch.float64)
    counter = InputGemms(T * B * GATES[cell] * H)
    with torch.no_grad(), counter:
        rnn(x)
    assert counter.widths == [2 * GATES[cell] * H] * L


def test_the_gemm_counter_sees_per_direction_gemms():
    """The counter above would catch a layer that projects each direction on its own."""
    T, B, H = 6, 3, 5
    w = torch.randn(2, 4 * H, 4, dtype=torch.float64)
    counter = InputGemms(T * B * 4 * H)
    with counter:
        x = torch.randn(T, B, 4, dtype=torch.float64)
        torch.nn.functional.linear(x, w[0]), torch.nn.functional.linear(x, w[1])
    assert counter.widths == [4 * H, 4 * H]


@pytest.mark.parametrize("bidir", [False, True])
def test_a_module_decode_step_runs_the_fused_step_per_layer_and_direction(calls, monkeypatch, bidir):
    name = calls.install("v2")
    stepped = plain_kernels.install_step(monkeypatch)
    ours, ref = make_pair("lstm", 4, 6, backend=name, num_layers=2, bidirectional=bidir, batch_first=True)
    x, state = make_inputs(4, 3, 1, torch.float64, batch_first=True), make_state("lstm", ours, 3, torch.float64)
    with torch.no_grad():
        got, want = ours(x, state), ref(x, state)
    torch.testing.assert_close(got, want, rtol=0, atol=F64_TOL)
    D = 2 if bidir else 1
    assert stepped == ["lstm"] * 2 * D and calls.seen == [(1, False)] * 2 * D  # the step's own inner calls
    y, (h, c) = got
    assert y.untyped_storage().data_ptr() != h.untyped_storage().data_ptr()
    # with autograd, or with a projection, or T > 1: the recurrence, not the step
    stepped.clear()
    err, _ = compare_to_torch(ours, ref, x, state)
    assert err < F64_TOL and stepped == []
    with torch.no_grad():
        ours(torch.randn(3, 2, 4, dtype=torch.float64))
        make_pair("lstm", 4, 6, backend=name, num_layers=2, proj_size=3)[0](torch.randn(1, 2, 4, dtype=torch.float64))
    assert stepped == []


def test_ops_recurrence_takes_two_directions_on_every_backend(calls):
    """fusedrnn.ops.recurrence with stacked arguments: the same numbers as two one-direction
    calls, on the reference, a backend running both in one call, and one declining it."""
    g = torch.Generator().manual_seed(0)
    T, B, H, P = 5, 3, 4, 2
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    gx, h0, c0, w, b, w_hr = r(T, B, 8 * H), r(2, B, P), r(2, B, H), r(2, 4 * H, P), r(2, 4 * H), r(2, P, H)
    lengths = torch.tensor([5, 2, 3])
    want = [fusedrnn.ops.recurrence("lstm", gx[..., d * 4 * H:(d + 1) * 4 * H], h0[d], c0[d], w[d], b[d],
                                    lengths=lengths, reverse=d == 1, w_hr=w_hr[d]) for d in (0, 1)]
    want = (torch.cat([want[0][0], want[1][0]], 2), *(torch.stack([want[0][i], want[1][i]]) for i in (1, 2)))
    for declaration in ("reference", "v2", "one direction per call"):
        calls.seen.clear()
        name = declaration if declaration == "reference" else calls.install(declaration)
        got = fusedrnn.ops.recurrence("lstm", gx, h0, c0, w, b, lengths=lengths, backend=name, w_hr=w_hr)
        torch.testing.assert_close(got, want, rtol=0, atol=F64_TOL)
        assert calls.seen == {"reference": [], "v2": [(2, True)], "one direction per call": [(1, True)] * 2}[declaration]


def test_explain_names_the_kernel_layout(calls):
    x = torch.randn(5, 2, 4)
    name = calls.install("v2")
    text = fusedrnn.explain(fusedrnn.LSTM(4, 6, bidirectional=True, proj_size=3, backend=name), x)
    assert "proj_size=3 runs inside the triton kernels" in text
    assert "one input GEMM for both directions, then both directions in one triton launch" in text
    name = calls.install("one direction per call")
    text = fusedrnn.explain(fusedrnn.GRU(4, 6, bidirectional=True, backend=name), x)
    assert "then one triton launch per direction (plain_kernels (as installed) runs one direction per call)" in text
    name = calls.install("neither")
    text = fusedrnn.explain(fusedrnn.LSTM(4, 6, proj_size=3, backend=name), x)
    assert "would raise RuntimeError" in text and "projection" in text
    assert "launch" not in fusedrnn.explain(fusedrnn.GRU(4, 6, backend=name), x)  # one direction: nothing to say


@pytest.mark.parametrize("name", sorted(backends.KERNEL_BACKENDS))
def test_each_real_backend_answers_for_two_directions_itself(name):
    """The shipped backends declare contract v2: whether both directions run in one launch is
    their own unsupported(..., directions=2), for every cell and projection (nothing raises)."""
    mod = backends.kernel_module(name)
    for cell, proj in LAYERS:
        why = backends.why_not_two_directions(name, cell, torch.float32, 8, proj)
        assert why == mod.unsupported(cell, torch.float32, 8, proj, directions=2)
