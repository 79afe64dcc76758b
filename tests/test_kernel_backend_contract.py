"""Every kernel backend module (fusedrnn.backends.KERNEL_BACKENDS) implements the whole
contract of docs/design.md — availability, unsupported, saved_shapes, forward,
backward, with the documented parameters — and its saved_shapes equals what its
forward saves (torch.compile's fake tensors and diagnostics rely on it). A backend that
declares contract v2 (`unsupported` takes `directions`) has v2's parameters everywhere and
passes tests/support/contract.py.

Contract v2 (tests/support/contract.py) on tests/support/plain_kernels.py, the plain-PyTorch stand-in
for the kernel backends: every case, float64 and float32; the check fails on a backend that
gets a projection gradient or the direction layout wrong, and on one that declines nothing
but cannot run two directions."""
import importlib
import inspect

import pytest
import torch

from fusedrnn.ops.common import TORCH_CELLS

from fusedrnn import diagnostics
from fusedrnn.backends import KERNEL_BACKENDS
from fusedrnn.ops import GATES
from support import contract
from support import plain_kernels

CONTRACT = {
    "availability": ["device"],
    "unsupported": ["cell", "dtype", "hidden_size", "proj_size"],
    "saved_shapes": ["cell", "gx", "h0", "c0", "w_hh", "b_hh", "lengths", "reverse", "need_grad"],
    "forward": ["cell", "gx", "h0", "c0", "w_hh", "b_hh", "lengths", "reverse", "need_grad"],
    "backward": ["cell", "dy", "dhT", "dcT", "gx", "h0", "c0", "w_hh", "b_hh", "lengths", "reverse", "y", "saved"],
}
#: contract v2 adds these parameters after the ones above
V2 = {"unsupported": "directions", "saved_shapes": "w_hr", "forward": "w_hr", "backward": "w_hr"}


def inputs(cell, T=3, B=2, H=5, dtype=torch.float32, lengths=False):
    G = GATES[cell]
    g = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g).to(dtype)  # noqa: E731
    return dict(gx=mk(T, B, G * H), h0=mk(B, H), c0=mk(B, H) if cell == "lstm" else None, w_hh=mk(G * H, H),
                b_hh=mk(G * H), lengths=torch.tensor([T, 1][:B], dtype=torch.int32) if lengths else None)


@pytest.mark.parametrize("name", sorted(KERNEL_BACKENDS))
def test_backend_module_has_the_whole_contract(name):
    mod = importlib.import_module(KERNEL_BACKENDS[name])
    for fn, params in CONTRACT.items():
        f = getattr(mod, fn, None)
        assert callable(f), f"{mod.__name__} lacks {fn}(...)"
        params = params + [V2[fn]] if fn in V2 else params
        got = list(inspect.signature(f).parameters)[: len(params)]
        assert got == params, f"{mod.__name__}.{fn} takes {got}, the contract says {params}"


def test_the_stand_in_declares_v2_with_its_signatures():
    from support import plain_kernels
    for fn, extra in V2.items():
        assert list(inspect.signature(getattr(plain_kernels, fn)).parameters)[len(CONTRACT[fn])] == extra


def runs(name: str, cell: str) -> bool:
    """Whether backend `name` takes `cell` at all (a declined cell is never called: the contract)."""
    return importlib.import_module(KERNEL_BACKENDS[name]).unsupported(cell, torch.float32, 4) is None


@pytest.mark.parametrize("name,cell", [(n, c) for n in sorted(KERNEL_BACKENDS) for c in sorted(GATES) if runs(n, c)])
def test_saved_shapes_on_meta_tensors_needs_no_values(name, cell):
    mod = importlib.import_module(KERNEL_BACKENDS[name])
    meta = {k: (v.to("meta") if v is not None else None) for k, v in inputs(cell, lengths=True).items()}
    shapes = mod.saved_shapes(cell, **meta, reverse=False, need_grad=True)
    assert all(isinstance(s, tuple) and isinstance(d, torch.dtype) for s, d in shapes)
    assert mod.saved_shapes(cell, **meta, reverse=False, need_grad=False) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="runs the cuda launcher on CPU tensors up to the device check")
@pytest.mark.parametrize("need_grad", [True, False])
@pytest.mark.parametrize("cell", [c for c in sorted(GATES) if runs("cuda", c)])
def test_cuda_saved_shapes_equal_what_forward_saves(cell, need_grad, monkeypatch):
    """cuda.forward on CPU tensors up to the extension: the real binding validates every
    tensor it is given (the saved activations must have exactly the shape and dtype the
    kernel writes) and only then fails on the missing device."""
    C = pytest.importorskip("fusedrnn._C", reason="the CUDA extension is not built (no nvcc)")
    from fusedrnn.ops import cuda as cuda_ops

    captured = {}

    class Binding:
        def plan(self, *args, machine=None):
            return {"workspace_bytes": 256, "tier": "cta"}

        def forward(self, *args, **kw):
            captured["saved"] = args[11]
            with pytest.raises(RuntimeError, match="cannot use CUDA device"):  # validated, then no device
                C.forward(*args, **kw)
            return ""

    monkeypatch.setattr(cuda_ops, "_C", Binding())
    monkeypatch.setattr(cuda_ops, "_launch_context", lambda t: (0, 0))
    monkeypatch.setattr(cuda_ops, "_after_launch", lambda *a: None)  # nothing ran: no error report to read
    x = inputs(cell, lengths=True)
    y, hT, cT, saved = cuda_ops.forward(cell, **x, reverse=False, need_grad=need_grad)
    got = [(tuple(t.shape), t.dtype) for t in saved]
    assert got == cuda_ops.saved_shapes(cell, **x, reverse=False, need_grad=need_grad)
    assert (captured["saved"] is None) == (not need_grad)
    if need_grad:
        assert captured["saved"][2] == got[0][0] and C.saved_slots(cell) == got[0][0][2]


@pytest.mark.parametrize("cell", sorted(GATES))
def test_triton_saved_shapes_equal_what_forward_saves(cell):
    mod = importlib.import_module(KERNEL_BACKENDS["triton"])
    x = inputs(cell, lengths=True)
    *_, saved = mod.forward(cell, **x, reverse=False, need_grad=True)
    assert [(tuple(t.shape), t.dtype) for t in saved] == mod.saved_shapes(cell, **x, reverse=False, need_grad=True)


@pytest.mark.parametrize("name", sorted(KERNEL_BACKENDS))
def test_diagnostics_predict_the_saved_bytes_of_every_backend(name):
    n = diagnostics.kernel_saved_bytes(KERNEL_BACKENDS[name], "lstm", 64, 16, 256)
    T, B, H = 64, 16, 256
    at_least = (T * B * 4 * H + T * B * H + 2 * B * H + 4 * H * H + 4 * H) * 4
    assert n >= at_least


@pytest.mark.parametrize("name", sorted(KERNEL_BACKENDS))
def test_a_v2_backend_meets_contract_v2_where_it_runs(name):
    """tests/support/contract.py on a few representative cases (every cell, both directions in one
    call, a projection, lengths), on the CPU (the Triton interpreter) or the GPU."""
    from support import contract
    mod = importlib.import_module(KERNEL_BACKENDS[name])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    why = mod.availability(device)
    if why is not None:
        pytest.skip(f"{name} cannot run on {device}: {why}")
    C = contract.Case
    which = [C("lstm", 2, proj=True, lengths=(4, 1, 3)), C("lstm", 1, reverse=True, proj=True), C("gru", 2),
             C("rnn_tanh", 2, lengths=(2, 4, 1)), C("rnn_relu", 1, reverse=True, lengths=(4, 1, 3)),
             C("gru_reset_before", 2, lengths=(4, 1, 3)), C("gru_reset_before", 1, reverse=True, bias=False)]
    declined = contract.check_backend(mod, torch.float32, device, which)
    assert len(declined) < len(which), f"{name} declined every case: {declined}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", [c for c in contract.cases() if c.cell in TORCH_CELLS], ids=str)
def test_plain_kernels_meet_contract_v2(case, dtype):  # the stand-in computes torch.nn's four cells
    err, err_torch = contract.check_case(plain_kernels, case, dtype)
    assert err_torch > 0 or dtype == torch.float64  # the baseline was computed, not skipped


def test_the_check_covers_every_cell_direction_and_projection():
    got = {(c.cell, c.D, c.reverse, c.proj, c.lengths is not None) for c in contract.cases()}
    for cell in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        for D, rev in ((1, False), (1, True), (2, False)):
            assert {(cell, D, rev, False, False), (cell, D, rev, False, True)} <= got
    assert {("lstm", D, rev, True, ln) for D, rev in ((1, False), (1, True), (2, False)) for ln in (0, 1)} <= got


def test_declined_cases_are_returned_not_run(monkeypatch):
    monkeypatch.setitem(plain_kernels.DECLARED, "directions", 1)
    monkeypatch.setitem(plain_kernels.DECLARED, "projections", False)
    which = [contract.Case("lstm", 2), contract.Case("lstm", 1, proj=True), contract.Case("gru", 1)]
    declined = contract.check_backend(plain_kernels, torch.float64, which=which)
    assert [c for c, _ in declined] == which[:2]


def _break(monkeypatch, fn, wrap):
    real = getattr(plain_kernels, fn)
    monkeypatch.setattr(plain_kernels, fn, lambda *a, **k: wrap(real(*a, **k)))


@pytest.mark.parametrize("breakage", ["dw_hr", "directions swapped", "hT of the wrong direction", "dh0"])
def test_the_check_fails_a_wrong_backend(monkeypatch, breakage):
    case = contract.Case("lstm", 2, proj=True, lengths=(4, 1, 3))
    if breakage == "dw_hr":
        _break(monkeypatch, "backward", lambda g: (*g[:4], g[4] * 1.001))
    elif breakage == "directions swapped":
        _break(monkeypatch, "forward", lambda o: (torch.cat(o[0].chunk(2, 2)[::-1], 2).contiguous(), *o[1:]))
    elif breakage == "hT of the wrong direction":
        _break(monkeypatch, "forward", lambda o: (o[0], o[1].flip(0).contiguous(), *o[2:]))
    else:
        _break(monkeypatch, "backward", lambda g: (g[0], g[1], g[2] * 0, *g[3:]))
    with pytest.raises(AssertionError):
        contract.check_case(plain_kernels, case, torch.float64)
