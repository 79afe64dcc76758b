"""Kernel-backend contract v2 (docs/design.md), checked on any backend module.

    from support import contract
    skipped = contract.check_backend(fusedrnn.ops.triton, torch.float32)  # AssertionError on a mismatch

For each case (every cell; one direction forward and reversed, both directions in one
call; with and without lengths; LSTM projections; no bias; T=1) it calls the module's
`forward` and `backward` directly with contract-v2 arguments on tiny shapes and
compares, against the reference run with autograd in float64 (fusedrnn.ops.reference;
two one-direction calls for D = 2): y, hT, cT; d_gx (the gradient of gx); dh0, dc0;
dW_hh and db_hh (from d_gh through the frontend's weight GEMM,
common.recurrent_weight_grads); dW_hr. It also checks that saved_shapes equals what
forward saved, y is exactly zero at padded steps, outputs have the contract's shapes and
the input dtype, and no output shares memory with an input.

Tolerance: float64, 1e-11 (both sides exact up to rounding order); another dtype, twice
the error torch.nn itself makes in that dtype on that device (`torch_nn_layer`: the same
layer run by torch.nn.LSTM/GRU/RNN, W_ih an identity that feeds gx through unchanged),
plus one machine epsilon — the rule of tests/test_module_parity.py. For the GRU with its
reset gate before the product, which torch.nn lacks, the larger of the reference's own error
in that dtype and torch.nn's on its GRU (reset after the product) with the same arguments:
in bf16 the reference, rounding far less than torch.nn, gave a bound every fused GRU kernel,
the CUDA reset-after GRU too, exceeds 2.5-5 times at H 24-33. Errors are the largest
absolute difference over every output and gradient.

Cases whose `unsupported(cell, dtype, H, P, directions=D)` gives a reason are not run;
check_backend returns them with the reason.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fusedrnn.ops import reference
from fusedrnn.ops.common import GATES, TORCH_CELLS, recurrent_weight_grads, reset_before_args

F64_TOL = 1e-11


class Case(NamedTuple):
    cell: str
    D: int                      # directions in one call
    reverse: bool = False       # D = 1 only
    proj: bool = False          # LSTM projection (P = 3 < H)
    lengths: tuple | None = None
    bias: bool = True
    T: int = 4
    B: int = 3
    H: int = 5

    @property
    def P(self) -> int:
        return 3 if self.proj else self.H

    def __str__(self) -> str:
        parts = [self.cell, f"D{self.D}", "rev" if self.reverse else "", "proj" if self.proj else "",
                 f"len{''.join(map(str, self.lengths))}" if self.lengths else "", "" if self.bias else "nobias",
                 f"T{self.T}"]
        return "-".join(p for p in parts if p)


def cases() -> list[Case]:
    out = []
    for cell in GATES:
        for D, reverse in ((1, False), (1, True), (2, False)):
            for lengths in (None, (4, 1, 3)):
                out.append(Case(cell, D, reverse, lengths=lengths))
                if cell == "lstm":
                    out.append(Case(cell, D, reverse, proj=True, lengths=lengths))
    out += [Case("gru", 2, bias=False, lengths=(2, 4, 1)), Case("lstm", 2, proj=True, bias=False),
            Case("lstm", 2, proj=True, T=1), Case("rnn_relu", 2, T=1, lengths=(1, 1, 1))]
    return out


def check_backend(mod, dtype: torch.dtype = torch.float32, device="cpu", which=None) -> list[tuple[Case, str]]:
    """Run every case (or `which`) the backend declares; AssertionError naming the first that fails.
    Returns [(case, reason)] for the cases its unsupported() declined."""
    declined = []
    for case in cases() if which is None else which:
        reason = declined_by(mod, case, dtype)
        if reason is not None:
            declined.append((case, reason))
            continue
        check_case(mod, case, dtype, device)
    return declined


def declined_by(mod, case: Case, dtype) -> str | None:
    return mod.unsupported(case.cell, dtype, case.H, case.P if case.proj else 0, directions=case.D)


def make_args(case: Case, dtype, device, seed=0):
    """The call's tensors (float64 values rounded to `dtype`, on `device`) and cotangents."""
    g = torch.Generator().manual_seed(seed)
    G, T, B, H, P, D = GATES[case.cell], case.T, case.B, case.H, case.P, case.D
    lead = (D,) if D == 2 else ()

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)
    args = dict(gx=r(T, B, D * G * H), h0=r(*lead, B, P), c0=r(*lead, B, H) if case.cell == "lstm" else None,
                w_hh=r(*lead, G * H, P, scale=0.5), b_hh=r(*lead, G * H) if case.bias else None,
                w_hr=r(*lead, P, H, scale=0.5) if case.proj else None)
    lengths = torch.tensor(case.lengths, dtype=torch.int32, device=device) if case.lengths else None
    cot = dict(dy=r(T, B, D * P), dhT=r(*lead, B, P), dcT=r(*lead, B, H) if case.cell == "lstm" else None)
    return args, lengths, cot


def _leaves(args: dict, dtype):
    return {k: (v.detach().to(dtype).requires_grad_() if v is not None else None) for k, v in args.items()}


def _outputs_and_grads(layer, case: Case, args: dict, lengths, cot: dict, dtype) -> list:
    """[y, hT, cT?, d_gx, dh0, dc0?, dW_hh, db_hh?, dW_hr?] of `layer` (autograd) in `dtype`."""
    a = _leaves(args, dtype)
    outs = layer(case.cell, a["gx"], a["h0"], a["c0"], a["w_hh"], a["b_hh"], lengths,
                 case.reverse, a["w_hr"])
    cots = [cot["dy"], cot["dhT"]] + ([cot["dcT"]] if case.cell == "lstm" else [])
    loss = sum((o * c.to(o.dtype)).sum() for o, c in zip(outs, cots))
    wrt = [a[k] for k in ("gx", "h0", "c0", "w_hh", "b_hh", "w_hr") if a[k] is not None]
    return [o.detach() for o in outs] + list(torch.autograd.grad(loss, wrt))


def _reference_layer(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr):
    return reference.recurrence(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr)


def _backend_outputs_and_grads(mod, case: Case, args: dict, lengths, cot: dict) -> list:
    """The same list from the backend's forward and backward, checking the contract's
    promises on the way (saved_shapes, padded zeros, shapes, dtypes, fresh outputs)."""
    cell, dtype = case.cell, args["gx"].dtype
    proj = {"w_hr": args["w_hr"]} if case.proj else {}
    fixed = (args["gx"], args["h0"], args["c0"], args["w_hh"], args["b_hh"], lengths, case.reverse)
    y, hT, cT, saved = mod.forward(cell, *fixed, True, **proj)
    name = f"{mod.__name__} forward, {case}"
    want_shapes = mod.saved_shapes(cell, *fixed, True, **proj)
    assert [(tuple(s.shape), s.dtype) for s in saved] == [(tuple(s), d) for s, d in want_shapes], \
        f"{name}: saved {[(tuple(s.shape), s.dtype) for s in saved]}, saved_shapes says {want_shapes}"
    y_ng, hT_ng, *_ = mod.forward(cell, *fixed, False, **proj)
    assert mod.saved_shapes(cell, *fixed, False, **proj) == [], f"{name}: saved_shapes(need_grad=False) not []"
    torch.testing.assert_close((y_ng, hT_ng), (y, hT), rtol=0, atol=0, msg=f"{name}: need_grad changes values")
    T, B, P, D = case.T, case.B, case.P, case.D
    lead = (D,) if D == 2 else ()
    expect = [(y, (T, B, D * P)), (hT, (*lead, B, P))] + ([(cT, (*lead, B, case.H))] if cell == "lstm" else [])
    for t, shape in expect:
        assert tuple(t.shape) == shape and t.dtype == dtype, f"{name}: output {tuple(t.shape)} {t.dtype}, want {shape}"
    assert cT is None or cell == "lstm"
    _assert_fresh(name, [y, hT, cT, *saved], [v for v in args.values() if v is not None])
    if lengths is not None:
        padded = torch.arange(T, device=y.device).view(T, 1) >= lengths.view(1, B)
        assert (y[padded] == 0).all(), f"{name}: y is not zero at padded steps"
    back = mod.backward(cell, cot["dy"], cot["dhT"], cot["dcT"], *fixed, y.clone(), saved, **proj)
    name = f"{mod.__name__} backward, {case}"
    assert len(back) == (5 if case.proj else 4), f"{name}: returned {len(back)} tensors"
    d_gx, d_gh, dh0, dc0, *dw_hr = back
    assert d_gx.shape == args["gx"].shape and d_gx.dtype == dtype and d_gh.shape == args["gx"].shape, name
    dw, db = recurrent_weight_grads(d_gh, y, args["h0"], lengths, case.reverse, case.bias, dtype,
                                    **reset_before_args(cell, args["gx"], args["w_hh"], args["b_hh"]))
    grads = [d_gx, dh0] + ([dc0] if cell == "lstm" else []) + [dw] + ([db] if case.bias else []) + dw_hr
    for gr, leaf in zip(grads[1:], [args[k] for k in ("h0", "c0", "w_hh", "b_hh", "w_hr") if args[k] is not None]):
        assert gr.shape == leaf.shape and gr.dtype == leaf.dtype, f"{name}: gradient {tuple(gr.shape)} {gr.dtype}"
    return [y, hT] + ([cT] if cell == "lstm" else []) + grads


def _assert_fresh(name, outs, inputs):
    storages = {t.untyped_storage().data_ptr() for t in inputs if t.numel()}
    for t in outs:
        if t is not None and t.numel():
            assert t.untyped_storage().data_ptr() not in storages, f"{name}: an output aliases an input or output"
            storages.add(t.untyped_storage().data_ptr())


def _max_err(a, b) -> float:
    return max(((u.double() - v.double()).abs().max().item() if u.numel() else 0.0) for u, v in zip(a, b, strict=True))


def check_case(mod, case: Case, dtype=torch.float32, device="cpu") -> tuple[float, float]:
    """AssertionError unless backend module `mod` meets the contract on `case`.
    Returns (backend error, torch.nn error) against the float64 reference."""
    args, lengths, cot = make_args(case, dtype, device)
    truth = _outputs_and_grads(_reference_layer, case, args, lengths, cot, torch.float64)
    ours = _backend_outputs_and_grads(mod, case, args, lengths, cot)
    err = _max_err(ours, truth)
    # the yardstick: torch.nn's own error, or for a cell torch.nn does not compute (the GRU with
    # its reset gate before the product) the larger of the reference's in this dtype and torch.nn's
    # on the GRU it does compute, with the same arguments (reset after the product)
    yardstick = torch_nn_layer if case.cell in TORCH_CELLS else _reference_layer
    err_torch = _max_err(_outputs_and_grads(yardstick, case, args, lengths, cot, dtype), truth)
    if case.cell not in TORCH_CELLS and dtype != torch.float64:
        sibling = case._replace(cell="gru")
        sibling_truth = _outputs_and_grads(_reference_layer, sibling, args, lengths, cot, torch.float64)
        err_torch = max(err_torch, _max_err(_outputs_and_grads(torch_nn_layer, sibling, args, lengths, cot, dtype),
                                            sibling_truth))
    if dtype == torch.float64:
        assert err_torch < F64_TOL, f"the float64 reference and torch.nn differ by {err_torch} on {case}"
        assert err < F64_TOL, f"{mod.__name__}, {case}: error {err} against the float64 reference"
    else:
        bound = 2 * err_torch + torch.finfo(dtype).eps
        assert err <= bound, f"{mod.__name__}, {case}: error {err} > 2 x torch.nn's {err_torch} + eps"
    return err, err_torch


def torch_nn_layer(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr):
    """The contract's layer (D = 1 or 2, any dtype and device) computed by torch.nn's own
    LSTM/GRU/RNN: input x = gx and W_ih an identity (each direction's block of it), b_ih zero,
    so the gates are exactly gx + h W_hhᵀ + b_hh. One reversed direction runs as the reverse
    half of a bidirectional module whose forward half is all zeros."""
    D = 2 if h0.dim() == 3 else 1
    T, B, DGH = gx.shape
    GH, dt, dev = DGH // D, gx.dtype, gx.device
    H, P = GH // GATES[cell], (w_hr.shape[-2] if w_hr is not None else 0)
    halves = 2 if (D == 2 or reverse) else 1

    def per_half(t):  # the argument as torch.nn's directions take it: (halves, ...)
        if t is None:
            return None
        if D == 2:
            return t
        return torch.stack([torch.zeros_like(t), t]) if reverse else t.unsqueeze(0)

    eye, zero = torch.eye(GH, dtype=dt, device=dev), torch.zeros(GH, GH, dtype=dt, device=dev)
    w_ih = [torch.cat([eye, zero], 1), torch.cat([zero, eye], 1)] if D == 2 else ([zero, eye] if reverse else [eye])
    b_hh = per_half(b_hh) if b_hh is not None else torch.zeros(halves, GH, dtype=dt, device=dev)
    w_hh, w_hr, h0, c0 = per_half(w_hh), per_half(w_hr), per_half(h0), per_half(c0)
    kw = dict(input_size=DGH, hidden_size=H, bidirectional=halves == 2, device="meta", dtype=dt)
    if cell == "lstm":
        module = nn.LSTM(proj_size=P, **kw)
    elif cell == "gru":
        module = nn.GRU(**kw)
    else:
        module = nn.RNN(nonlinearity=cell[4:], **kw)
    params = {}
    for k in range(halves):
        sfx = "_l0" + ("_reverse" if k else "")
        params.update({"weight_ih" + sfx: w_ih[k], "weight_hh" + sfx: w_hh[k], "bias_ih" + sfx: b_hh.new_zeros(GH),
                       "bias_hh" + sfx: b_hh[k]})
        if w_hr is not None:
            params["weight_hr" + sfx] = w_hr[k]
    x = gx if lengths is None else pack_padded_sequence(gx, lengths.cpu().long(), enforce_sorted=False)
    out, hidden = torch.func.functional_call(module, params, (x, (h0, c0) if cell == "lstm" else h0))
    if lengths is not None:
        out = pad_packed_sequence(out, total_length=T)[0]
    states = hidden if cell == "lstm" else (hidden,)
    if D == 1:
        k = 1 if reverse else 0
        width = out.shape[-1] // halves
        out, states = out[..., k * width:(k + 1) * width], tuple(s[k] for s in states)
    return (out, *states)


def nonfinite_mismatches(backend: str, cell: str, dtype, value: float, device="cpu") -> list[str]:
    """fusedrnn.ops.recurrence(backend=...) with `value` (inf, -inf or NaN) in one unit of h0,
    against torch.nn in the same dtype: the outputs and the gradients of gx and h0 whose NaN,
    +inf or -inf positions differ (empty when all agree). A kernel that splits a value into
    high and low parts must keep inf * w = ±inf, not turn it into inf - inf = NaN."""
    import fusedrnn  # noqa: PLC0415

    case = Case(cell, 1, T=3, B=3, H=5)
    args, _, cot = make_args(case, dtype, device)
    args["h0"][1, 2] = value
    found = []
    for name, layer in (("fusedrnn", None), ("torch.nn", torch_nn_layer)):
        a = {k: (v.detach().clone().requires_grad_(k in ("gx", "h0")) if v is not None else None) for k, v in args.items()}
        if layer is None:
            outs = fusedrnn.ops.recurrence(cell, a["gx"], a["h0"], a["c0"], a["w_hh"], a["b_hh"], backend=backend)
        else:
            outs = layer(cell, a["gx"], a["h0"], a["c0"], a["w_hh"], a["b_hh"], None, False, None)
        outs = [o for o in outs if o is not None]
        grads = torch.autograd.grad(outs, [a["gx"], a["h0"]], grad_outputs=[cot["dy"], cot["dhT"], cot["dcT"]][:len(outs)])
        found.append([t.detach() for t in outs] + list(grads))
    names = ["y", "hT", "cT"][:len(found[0]) - 2] + ["d_gx", "dh0"]
    return [n for n, a, b in zip(names, *found)
            if not all(torch.equal(f(a), f(b)) for f in (torch.isnan, torch.isposinf, torch.isneginf))]
