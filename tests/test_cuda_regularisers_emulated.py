"""Zoneout and variational recurrent dropout in the CUDA kernels (csrc/passes.cuh FwdRegPass /
BwdRegPass, csrc/step.cuh), run on the CPU through the emulated build (tools/cuda_emu), against
the float64 reference (fusedrnn/ops/reference.py) given the same masks: y, hT, cT and every
gradient (gx, h0, c0, W_hh, b_hh; dW_hh pairs d_gates with drop_h ⊙ h_{t-1}, fusedrnn/ops/library.py).

The masks are drawn as the modules draw them (fusedrnn/regularisers.py, training: 0/1 zoneout,
recurrent dropout scaled by 2 = 1/(1 - 0.5), exact in every dtype; eval: the expectation p) and
the call goes through fusedrnn.ops.recurrence, so the library's own plumbing (the masks to both
kernels, the dW_hh GEMM) is under test too.

Tolerance, the emulated suite's rules (tests/support/emulated.py) with a stand-in for torch.nn's
error, since torch.nn has no zoneout or recurrent dropout:
  - fp32: per output at most twice the fp32 reference's relative error, floor 5e-5;
  - bf16: at most twice the error of the formulas evaluated by torch ops in bf16 (the float64
    oracle tests/support/regulariser_oracle.py run in the dtype, every op rounded as torch.nn's
    are), plus one machine epsilon. The reference backend in bf16 is no yardstick here: it keeps
    its state in fp32 (4x less error than torch.nn on the plain cells), while these kernels, like
    torch.nn, round h to bf16 where it enters the product. On the plain cells this oracle's
    bf16 error measured 1.1-1.5x torch.nn's own (LSTM, GRU, RNN relu at H = 5 and 24).
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedrnn
from fusedrnn import ops, regularisers
from fusedrnn.ops import cuda
from fusedrnn.ops.common import GRU_RESET_BEFORE
from support import contract, regulariser_oracle
from support.emulated import F32_FLOOR
from support.float64_checks import grads

REGS = regularisers.Regularisers(zoneout=0.4, zoneout_cell=0.3, recurrent_dropout=0.5)
CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
# (mode, units, batch rows, passes, H): "cta" one CTA; the others split H over several CTAs and
# B = 11 over two batch groups (tests/test_cuda_emulated.py TIERS), "step" one launch per step
TIERS = {
    "cta": ("cta", 0, 0, 0, 5),
    "cluster": ("cluster", 8, 8, 0, 24),
    "grid": ("grid", 8, 8, 0, 24),
    "step": ("step", 0, 0, 0, 7),
}


@pytest.fixture
def launches(monkeypatch) -> list:
    """The mask keywords of each cuda.forward / cuda.backward call of a test, so that a test can
    show the kernels, not the reference, ran with the masks."""
    seen = []
    for fn in ("forward", "backward"):
        real = getattr(cuda, fn)

        def spy(*args, _real=real, _fn=fn, **kw):
            seen.append((_fn, sorted(k for k in ("zoneout_h", "zoneout_c", "drop_h") if kw.get(k) is not None)))
            return _real(*args, **kw)
        monkeypatch.setattr(cuda, fn, spy)
    return seen


def masks_of(case, regs=REGS, training=True, seed=0) -> dict:
    """The layer's masks, drawn as fusedrnn/regularisers.py draws them (fp32), as recurrence's keywords."""
    torch.manual_seed(seed)
    m = regularisers.layer_masks(regs, training, case.T, case.B, case.D, case.P, case.H, case.cell == "lstm",
                                 "cpu", torch.float32)
    return m.kwargs()


def outputs_and_grads(backend, case, args, lengths, cot, masks, dtype) -> list:
    """[y, hT, cT?, d_gx, dh0, dc0?, dW_hh, db_hh?] through fusedrnn.ops.recurrence in `dtype`."""
    leaves = {k: v.detach().to(dtype).requires_grad_() for k, v in args.items() if v is not None}
    outs = ops.recurrence(case.cell, leaves["gx"], leaves["h0"], leaves.get("c0"), leaves["w_hh"],
                          leaves.get("b_hh"), lengths=lengths, reverse=case.reverse, backend=backend, **masks)
    cots = [cot["dy"], cot["dhT"]] + ([cot["dcT"]] if case.cell == "lstm" else [])
    loss = sum((o * c.to(o.dtype)).sum() for o, c in zip(outs, cots, strict=True))
    return [o.detach() for o in outs] + list(torch.autograd.grad(loss, list(leaves.values())))


def oracle_outputs_and_grads(case, args, lengths, cot, masks, dtype) -> list:
    """The same list from the oracle (tests/support/regulariser_oracle.py) evaluated in `dtype`,
    one direction at a time (direction 1 reversed, its masks as fusedrnn/regularisers.py splits them)."""
    leaves = {k: v.detach().to(dtype).requires_grad_() for k, v in args.items() if v is not None}
    m = {k: v.to(dtype) for k, v in masks.items()}
    GH, outs = leaves["gx"].shape[2] // case.D, []
    for d in range(case.D):
        md = regularisers.direction(m, d, 2) if case.D == 2 else m
        pick = (lambda t: t[d]) if case.D == 2 else (lambda t: t)  # noqa: E731
        c0 = leaves.get("c0")
        outs.append(regulariser_oracle.layer(case.cell, leaves["gx"][..., d * GH:(d + 1) * GH], pick(leaves["h0"]),
                                             pick(c0) if c0 is not None else None, pick(leaves["w_hh"]),
                                             pick(leaves["b_hh"]), None, lengths, case.reverse or d == 1,
                                             md.get("zoneout_h"), md.get("zoneout_c"), md.get("drop_h")))
    join = (lambda ts: torch.stack(ts)) if case.D == 2 else (lambda ts: ts[0])  # noqa: E731
    res = [torch.cat([o[0] for o in outs], 2), join([o[1] for o in outs])]
    if case.cell == "lstm":
        res.append(join([o[2] for o in outs]))
    cots = [cot["dy"], cot["dhT"]] + ([cot["dcT"]] if case.cell == "lstm" else [])
    loss = sum((o * c.to(o.dtype)).sum() for o, c in zip(res, cots, strict=True))
    return [o.detach() for o in res] + list(torch.autograd.grad(loss, list(leaves.values())))


def _rel(a, ref) -> float:
    return (a.double() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30) if ref.numel() else 0.0


def check(backend, case, dtype, masks):
    """AssertionError unless the kernels (`backend`: the name the cuda_kernels fixture gives them)
    meet the rule above on `case` with `masks`."""
    args, lengths, cot = contract.make_args(case, dtype, "cpu", seed=5)
    truth = outputs_and_grads("reference", case, args, lengths, cot, masks, torch.float64)
    ours = outputs_and_grads(backend, case, args, lengths, cot, masks, dtype)
    if dtype == torch.float32:
        yard = outputs_and_grads("reference", case, args, lengths, cot, masks, dtype)
    else:
        yard = oracle_outputs_and_grads(case, args, lengths, cot, masks, dtype)
    names = ["y", "hT"] + (["cT"] if case.cell == "lstm" else []) + ["d_" + k for k, v in args.items() if v is not None]
    assert len(ours) == len(truth) == len(names)
    if dtype == torch.float32:
        for name, a, y, t in zip(names, ours, yard, truth, strict=True):
            err, bound = _rel(a, t), max(2 * _rel(y, t), F32_FLOOR)
            assert err <= bound, f"{case} {sorted(masks)}: {name}: relative error {err:.3g} > {bound:.3g}"
    else:
        err = max((a.double() - t).abs().max().item() for a, t in zip(ours, truth))
        err_y = max((y.double() - t).abs().max().item() for y, t in zip(yard, truth))
        bound = 2 * err_y + torch.finfo(dtype).eps
        assert err <= bound, f"{case} {sorted(masks)}: error {err:.3g} > 2 x the bf16 oracle's {err_y:.3g} + eps"


def cases(H, B=11, T=3):
    """Per cell: one direction forward with every length, reversed, and both directions with lengths."""
    lengths = tuple((i * 7) % T + 1 for i in range(B))  # every length 1..T, unsorted
    return [c for cell in CELLS for c in (contract.Case(cell, 1, False, lengths=lengths, T=T, B=B, H=H),
                                          contract.Case(cell, 1, True, T=T, B=B, H=H),
                                          contract.Case(cell, 2, False, lengths=lengths, T=T, B=B, H=H))]


def _params():
    out = []
    for tier, (_, _, _, _, H) in TIERS.items():
        B = 3 if tier in ("cta", "step") else 11
        for case in cases(H, B=B):
            for dtype in (torch.float32, torch.bfloat16):
                out.append(pytest.param(tier, dtype, case, id=f"{tier}-{str(dtype)[6:]}-{case.cell}-D{case.D}"
                                        f"{'-rev' if case.reverse else ''}{'-len' if case.lengths else ''}"))
    return out


@pytest.mark.sampled
@pytest.mark.parametrize("tier,dtype,case", _params())
def test_regularised_kernels_match_the_reference(cuda_kernels, knobs, launches, tier, dtype, case):
    """Zoneout of h and c and recurrent dropout together, every tier forced, every cell, one and
    two directions, reversed, lengths; odd H (5, 7), batch 3 or 11 over two batch groups."""
    mode, units, rows, passes, _ = TIERS[tier]
    knobs(mode, units, rows, passes)
    masks = masks_of(case, seed=len(str(case)))
    check(cuda_kernels, case, dtype, masks)
    assert [f for f, m in launches if m == sorted(masks)] == ["forward", "backward"], launches


@pytest.mark.parametrize("cell", CELLS)
def test_one_step_and_each_mask_alone(cuda_kernels, knobs, cell):
    """T = 1, and each mask on its own (the kernels read an absent mask as off), in eval (zoneout's
    expectation p) and training."""
    knobs()
    for T in (1, 3):
        case = contract.Case(cell, 1, lengths=(T, 1, T) if T > 1 else None, T=T, B=3, H=5)
        for regs, training in ((REGS._replace(zoneout_cell=0.0, recurrent_dropout=0.0), True),
                               (REGS._replace(zoneout=0.0, zoneout_cell=0.0), True),
                               (REGS._replace(zoneout=0.0, recurrent_dropout=0.0), True), (REGS, False)):
            masks = masks_of(case, regs, training, seed=T)
            if masks:
                check(cuda_kernels, case, torch.float32, masks)


def _module_run(make, backend, x, h0, c0, lengths, lstm):
    """y, h_n, c_n and the gradients of module `make(backend)` on a packed batch, masks drawn from seed 4."""
    torch.manual_seed(3)
    m = make(backend)
    leaves = [t.detach().clone().requires_grad_() for t in (x, h0, c0) if t is not None]
    packed = pack_padded_sequence(leaves[0], lengths, enforce_sorted=False)
    torch.manual_seed(4)
    out, hn = m(packed, (leaves[1], leaves[2]) if lstm else leaves[1])
    y = pad_packed_sequence(out)[0]
    h, c = hn if lstm else (hn, None)
    return m, packed, [y, h] + ([c] if lstm else []) + list(grads((y, h, c), leaves + list(m.parameters())))


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_relu"])
def test_module_two_layers_bidirectional_packed(cuda_kernels, knobs, launches, name):
    """The modules on the CUDA kernels in training: masks drawn as documented (one launch runs both
    directions), packed lengths, two layers, every gradient (parameters included) against the
    float64 oracle from the same seed; the fp32 rule with the reference backend as the yardstick."""
    knobs()
    lstm = name == "lstm"
    regs = dict(zoneout=0.4, recurrent_dropout=0.5, **(dict(zoneout_cell=0.3) if lstm else {}))
    kind = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn_relu": fusedrnn.RNN}[name]
    extra = dict(nonlinearity="relu") if name == "rnn_relu" else {}
    make = lambda backend: kind(4, 5, num_layers=2, bidirectional=True, backend=backend, **extra, **regs)  # noqa: E731
    g = torch.Generator().manual_seed(1)
    x, h0 = torch.randn(3, 3, 4, generator=g), torch.randn(4, 3, 5, generator=g)
    c0 = torch.randn(4, 3, 5, generator=g) if lstm else None
    lengths = torch.tensor([3, 1, 2])
    m, packed, ours = _module_run(make, cuda_kernels, x, h0, c0, lengths, lstm)
    want = sorted(("zoneout_h", "drop_h") + (("zoneout_c",) if lstm else ()))
    assert [f for f, masks in launches] == ["forward"] * 2 + ["backward"] * 2 and all(
        masks == want for _, masks in launches), launches  # two layers, both directions in one launch each
    _, _, yard = _module_run(make, "reference", x, h0, c0, lengths, lstm)
    m64 = copy.deepcopy(m).double()
    leaves = [t.double().requires_grad_() for t in (x, h0, c0) if t is not None]
    torch.manual_seed(4)
    oy, oh, oc = regulariser_oracle.module(m64, *leaves, *([] if lstm else [None]), regs, True, lengths,
                                           packed.sorted_indices)
    truth = [oy, oh] + ([oc] if lstm else []) + list(grads((oy, oh, oc), leaves + list(m64.parameters())))
    assert len(ours) == len(truth) == len(yard)
    for k, (a, y, t) in enumerate(zip(ours, yard, truth, strict=True)):
        err, bound = _rel(a, t), max(2 * _rel(y, t), F32_FLOOR)
        assert err <= bound, f"{name}: output/gradient {k} {tuple(t.shape)}: relative error {err:.3g} > {bound:.3g}"


def _cell_run(make, backend, dtype):
    """h after two training steps of cell `make(backend)` in `dtype` (masks from seed 5) and the
    gradients of a weighting of it with respect to the inputs, h0 and the parameters."""
    torch.manual_seed(5)
    c = make(backend).to(dtype)
    g = torch.Generator().manual_seed(2)
    x = [torch.randn(3, 4, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for _ in range(2)]
    h0 = torch.randn(3, 5, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    state = (h0, torch.randn(3, 5, generator=g, dtype=torch.float64).to(dtype)) if isinstance(c, torch.nn.LSTMCell) \
        else h0
    torch.manual_seed(6)
    for xi in x:
        state = c(xi, state)
    h = state[0] if isinstance(state, tuple) else state
    return [h, *grads((h,), [*x, h0, *c.parameters()])]


@pytest.mark.parametrize("make", [lambda b: fusedrnn.LSTMCell(4, 5, zoneout=0.4, zoneout_cell=0.3,
                                                               recurrent_dropout=0.5, backend=b),
                                  lambda b: fusedrnn.GRUCell(4, 5, zoneout=0.4, recurrent_dropout=0.5, backend=b),
                                  lambda b: fusedrnn.RNNCell(4, 5, nonlinearity="relu", zoneout=0.4,
                                                             recurrent_dropout=0.5, backend=b)],
                         ids=["lstm", "gru", "rnn_relu"])
def test_cells_two_training_steps(cuda_kernels, knobs, launches, make):
    """A cell's steps on the CUDA kernels (T = 1 launches, the cell's kept recurrent-dropout mask),
    against the float64 reference cell from the same seed; the fp32 rule."""
    knobs()
    ours = _cell_run(make, cuda_kernels, torch.float32)
    assert [f for f, _ in launches] == ["forward"] * 2 + ["backward"] * 2 and all(m for _, m in launches), launches
    yard = _cell_run(make, "reference", torch.float32)
    truth = _cell_run(make, "reference", torch.float64)
    for k, (a, y, t) in enumerate(zip(ours, yard, truth, strict=True)):
        err, bound = _rel(a, t), max(2 * _rel(y, t), F32_FLOOR)
        assert err <= bound, f"output/gradient {k}: relative error {err:.3g} > {bound:.3g}"


def test_unsupported_declines_only_the_projection():
    """cuda.unsupported runs regularised calls now, except with proj_size, which it declines by name."""
    assert cuda.unsupported("gru", torch.float32, 5, regularised=True) is None
    assert cuda.unsupported("lstm", torch.bfloat16, 5, directions=2, regularised=True) is None
    why = cuda.unsupported("lstm", torch.float32, 5, proj_size=3, regularised=True)
    assert why is not None and "zoneout" in why and "proj_size" in why


def _forward_args(case, dtype=torch.float32):
    args, lengths, _ = contract.make_args(case, dtype, "cpu")
    return (args["gx"], args["h0"], args["c0"], args["w_hh"], args["b_hh"], lengths, case.reverse, False)


@pytest.mark.parametrize("name,bad,message", [
    ("zoneout_h", lambda T, B, P: torch.zeros(T, B, P + 1), r"zoneout_h must have shape \(3, 3, 5\), got \(3, 3, 6\)"),
    ("zoneout_h", lambda T, B, P: torch.zeros(T, B, P, dtype=torch.float16),
     "zoneout_h has dtype float16, expected float32"),
    ("zoneout_c", lambda T, B, P: torch.zeros(T, P, B)[:, :, :].transpose(1, 2), "zoneout_c must be contiguous"),
    ("drop_h", lambda T, B, P: torch.ones(2, B, P), r"drop_h must have shape \(3, 5\), got \(2, 3, 5\)"),
])
def test_bad_masks_raise_a_clear_error(emu, knobs, name, bad, message):
    """The extension checks each mask's shape, dtype and layout (csrc/validate.cpp make_masks) and
    raises ValueError naming it, before any launch."""
    knobs()
    case = contract.Case("lstm", 1, T=3, B=3, H=5)
    gx, h0, c0, w_hh, b_hh, *_ = _forward_args(case)
    T, B, P = 3, 3, 5
    y, hT, cT = torch.empty(T, B, P), torch.empty(B, P), torch.empty(B, P)
    ws = torch.empty(1 << 20, dtype=torch.uint8)
    arg = cuda._arg
    with pytest.raises(ValueError, match=message):
        emu.forward("lstm", False, arg(gx), arg(h0), arg(c0), arg(w_hh), arg(b_hh), None, arg(y), arg(hT), arg(cT),
                    None, arg(ws), 0, 0, **{name: arg(bad(T, B, P))})


def test_masks_with_a_projection_or_without_a_cell_state_raise(emu, knobs):
    knobs()
    case = contract.Case("gru", 1, T=3, B=3, H=5)
    gx, h0, c0, w_hh, b_hh, lengths, rev, _ = _forward_args(case)
    with pytest.raises(ValueError, match="zoneout_c .*exists only for the lstm cell"):
        cuda.forward("gru", gx, h0, None, w_hh, b_hh, None, False, False, zoneout_c=torch.zeros(3, 3, 5))
    pcase = contract.Case("lstm", 1, proj=True, T=3, B=3, H=5)
    args, _, _ = contract.make_args(pcase, torch.float32, "cpu")
    with pytest.raises(ValueError, match="do not run zoneout or recurrent dropout with a projection"):
        cuda.forward("lstm", args["gx"], args["h0"], args["c0"], args["w_hh"], args["b_hh"], None, False, False,
                     w_hr=args["w_hr"], zoneout_h=torch.zeros(3, 3, 3))


def test_masks_with_the_reset_before_gru_raise(emu, knobs):
    """The reset-before GRU's two-stage passes take no masks: cuda.unsupported declines the call
    by name, and the extension refuses masks handed to it anyway (validate.cpp make_masks)."""
    knobs()
    why = cuda.unsupported(GRU_RESET_BEFORE, torch.float32, 5, regularised=True)
    assert why is not None and "zoneout" in why and "reset_after=False" in why
    case = contract.Case(GRU_RESET_BEFORE, 1, T=3, B=3, H=5)
    gx, h0, _, w_hh, b_hh, *_ = _forward_args(case)
    with pytest.raises(ValueError, match="do not run zoneout or recurrent dropout for gru_reset_before"):
        cuda.forward(GRU_RESET_BEFORE, gx, h0, None, w_hh, b_hh, None, False, False, zoneout_h=torch.zeros(3, 3, 5))
