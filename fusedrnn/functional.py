"""Multi-layer, bidirectional RNNs built from the per-layer recurrence.

Everything a torch.nn RNN offers beyond one layer lives here once, so every backend
gets it: stacking layers, both directions, inter-layer dropout, LSTM projections and
variable lengths. Inputs are time-major and padded; a PackedSequence arrives here
already unpacked (see fusedrnn.packing).

Per layer: one input GEMM for every direction (a bidirectional layer multiplies by
cat(W_ih_fwd, W_ih_bwd), giving gx (T,B,2*G*H) in the kernels' two-direction layout),
then one recurrence call with the directions' weights and states stacked where the
backend runs both directions in one launch, else one call per direction (each reading
its slice of gx). A call with T=1 that autograd does not record runs a backend's fused
`step(...)` per layer and direction instead, where the backend has one (decoding).

Dimensions: T time steps, B batch, I input features, H hidden units,
P = proj_size or H, L layers, D directions, G gates.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import backends, ops, regularisers
from .ops import cell_step, library
from .ops.common import per_direction


_ASK = object()  # rnn(step=...) not given: rnn asks decode_step itself


class LayerWeights(NamedTuple):
    w_ih: torch.Tensor            # (G*H, I or D*P)
    w_hh: torch.Tensor            # (G*H, P)
    b_ih: torch.Tensor | None     # (G*H,)
    b_hh: torch.Tensor | None     # (G*H,)
    w_hr: torch.Tensor | None     # (P, H) LSTM projection


def rnn(cell: str, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
        weights: list[LayerWeights], *, num_layers: int, bidirectional: bool,
        dropout: float = 0.0, training: bool = False, lengths: torch.Tensor | None = None,
        dropout_mask: torch.Tensor | None = None, backend: str = "reference", step=_ASK,
        regs: regularisers.Regularisers | None = None):
    """Run a stacked RNN, for fusedrnn's modules: they have applied torch.nn's checks to every
    argument and resolved `backend` to "reference" or a kernel backend ("triton", "cuda"), so
    no layer repeats the contract's checks or the backend choice (fusedrnn.ops.run).

    x (T,B,I) time-major, zero past each sequence's end · h0 (L*D,B,P) · c0 (L*D,B,H)
    for "lstm" else None · weights[l*D + d] for layer l, direction d · lengths (B,) or
    None · dropout_mask (T,B) bool: when given, inter-layer dropout draws its noise
    only for these positions, in (t, b) order, which is how torch.nn drops a packed
    sequence. regs: zoneout / recurrent dropout (fusedrnn/regularisers.py), whose masks are
    drawn here per layer, in the order that module documents, and passed to the recurrence.
    `step`: the backend's fused step(...) or None where the caller has asked decode_step(...)
    already (a regularised call never takes it). Returns (y (T,B,D*P), h_n (L*D,B,P), c_n
    (L*D,B,H) or None).
    """
    if backend != "reference" and backend not in backends.KERNEL_BACKENDS:
        raise ValueError(f"fusedrnn.functional.rnn runs a resolved backend ('reference' or one of "
                         f"{', '.join(map(repr, backends.KERNEL_BACKENDS))}), not {backend!r}: fusedrnn's modules "
                         "resolve it (fusedrnn.backends.choose_name)")
    D = 2 if bidirectional else 1
    regularised = regs is not None and regs.active(training)
    if regularised:
        step = None
    elif step is _ASK:
        step = decode_step(backend, cell, x, h0, c0, weights)
    h_n, c_n = [], []
    layer_in = x
    for layer in range(num_layers):
        # one direction: its state (B,P) itself; two: the layer's pair (2,B,P)
        k = layer if D == 1 else slice(2 * layer, 2 * layer + 2)
        ws = weights[layer * D:(layer + 1) * D]
        c0_k = c0[k] if c0 is not None else None
        if step is not None:
            layer_in, h, c = _step_layer(step, cell, layer_in, h0[k], c0_k, ws)
        else:
            masks = regularisers.NO_MASKS if not regularised else regularisers.layer_masks(
                regs, training, x.shape[0], x.shape[1], D, h0.shape[-1], ws[0].w_hh.shape[0] // ops.GATES[cell],
                cell == "lstm", x.device, x.dtype)
            layer_in, h, c = _sequence_layer(cell, layer_in, h0[k], c0_k, ws, lengths, backend, masks.kwargs())
        h_n.append(h)
        c_n.append(c)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_in = _dropout(layer_in, dropout, dropout_mask)
    join = torch.stack if D == 1 else torch.cat
    return layer_in, join(h_n), (join(c_n) if cell == "lstm" else None)


def _sequence_layer(cell, x, h0, c0, ws, lengths, backend, masks):
    """One layer over the sequence: the input GEMM for all D directions, then the recurrence.
    ws: D LayerWeights; h0 (B,P) and c0 (B,H) for one direction, (2,B,·) for two (c0 None
    except for lstm); masks: the regularisers' keywords given (LayerMasks.kwargs()).
    Returns y (T,B,D*P) and hT, cT shaped like h0, c0."""
    if len(ws) == 1:
        (w,) = ws
        gx = F.linear(x, w.w_ih, w.b_ih)                                            # (T, B, G*H)
        res = ops.run(backend, cell, gx, h0, c0, w.w_hh, w.b_hh, lengths=lengths, w_hr=w.w_hr, **masks)
    else:
        gx = F.linear(x, torch.cat([w.w_ih for w in ws]), _joined(torch.cat, ws, "b_ih"))  # (T, B, 2*G*H)
        if not _one_call(backend, cell, gx.dtype, ws):
            # one call per direction on the layer's own weights: nothing stacked only to be split again
            res = per_direction(functools.partial(ops.run, backend), cell, gx, h0, c0, [w.w_hh for w in ws],
                                _joined(list, ws, "b_hh"), lengths, _joined(list, ws, "w_hr"), **masks)
        else:
            res = ops.run(backend, cell, gx, h0, c0, _stack([w.w_hh for w in ws]), _joined(_stack, ws, "b_hh"),
                          lengths=lengths, w_hr=_joined(_stack, ws, "w_hr"), **masks)
    return res[0], res[1], (res[2] if cell == "lstm" else None)


def _one_call(name, cell, dtype, ws) -> bool:
    """Whether resolved backend `name` takes both directions in one call (stacked arguments):
    the one place the question is asked for a module's call (fusedrnn.ops.run trusts it)."""
    if name == "reference":
        return False  # it runs them one after the other anyway: stacking would only copy
    H, P = ws[0].w_hh.shape[0] // ops.GATES[cell], (ws[0].w_hr.shape[0] if ws[0].w_hr is not None else 0)
    return backends.runs_two_directions(name, cell, dtype, H, P)


def _stack(ts):
    """torch.stack(ts); while torch.jit.trace runs, with grad mode on: its sanity check re-traces
    under no_grad, and the stacked weights must still require grad as the parameters do (the
    kernel op saves for backward whenever an argument does, fusedrnn/ops/library.py)."""
    with torch.enable_grad() if torch.jit.is_tracing() else contextlib.nullcontext():
        return torch.stack(ts)


def _joined(join, ws, field):
    """join(the directions' `field`), or None where the layer has none (no bias, no projection)."""
    ts = [getattr(w, field) for w in ws]
    return None if ts[0] is None else join(ts)


def decode_step(backend, cell, x, h0, c0, weights):
    """The backend's fused step(...) when this call may run it per layer and direction: one time
    step, no projection, nothing for autograd to record, plain eager (cell_step.fused_step);
    else None. At T=1 every sequence has length 1, so lengths change nothing."""
    if x.shape[0] != 1 or weights[0].w_hr is not None:
        return None
    return cell_step.fused_step(backend, x, (h0, c0, *itertools.chain.from_iterable(weights)), cell)


def _step_layer(step, cell, x, h0, c0, ws):
    """One layer at T=1 through the backend's step(...) per direction; as _sequence_layer."""
    if len(ws) == 1:
        (w,) = ws
        with library.one_launch_at_a_time():
            h, c = step(cell, x[0], h0, c0, w.w_ih, w.w_hh, w.b_ih, w.b_hh)
        return h.unsqueeze(0), h, c  # rnn() stacks the states into h_n: a copy, never y's storage
    hs, cs = [], []
    for d, w in enumerate(ws):
        with library.one_launch_at_a_time():
            h, c = step(cell, x[0], h0[d], c0[d] if c0 is not None else None, w.w_ih, w.w_hh, w.b_ih, w.b_hh)
        hs.append(h)
        cs.append(c)
    return torch.cat(hs, dim=1).unsqueeze(0), torch.stack(hs), (torch.stack(cs) if cell == "lstm" else None)


def _dropout(y: torch.Tensor, p: float, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return F.dropout(y, p, training=True)
    dropped = F.dropout(y[mask], p, training=True)
    return torch.zeros_like(y).masked_scatter(mask.unsqueeze(2), dropped)
