"""The per-layer recurrence (one direction, or both directions of a layer): the one fused
part of an RNN.

`recurrence` is the differentiable entry point of the kernel contract in docs/design.md;
it checks its arguments once and hands them to the chosen backend.
"""
from __future__ import annotations

import contextlib

import torch

from .. import backends
from . import autodiff, library, reference
from .common import CELLS, GATES, check_int32_indexing, check_masks, check_recurrence_args, per_direction

__all__ = ["recurrence", "run", "CELLS", "GATES"]

_NO_CONTEXT = contextlib.nullcontext()


def recurrence(cell: str, gx: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
               w_hh: torch.Tensor, b_hh: torch.Tensor | None, lengths: torch.Tensor | None = None,
               reverse: bool = False, backend: str = "reference", w_hr: torch.Tensor | None = None,
               zoneout_h: torch.Tensor | None = None, zoneout_c: torch.Tensor | None = None,
               drop_h: torch.Tensor | None = None):
    """Run one layer of an RNN over its whole sequence: one direction, or both at once.

    Args:
        cell: "lstm", "gru", "rnn_tanh" or "rnn_relu".
        gx: (T, B, G*H) input projection x W_ihᵀ + b_ih, time-major.
        h0: (B, P) initial hidden state (P = H unless w_hr is given).
        c0: (B, H) initial cell state for "lstm", else None.
        w_hh: (G*H, P) recurrent weights in torch.nn's gate order.
        b_hh: (G*H,) recurrent bias or None.
        lengths: (B,) int tensor with values in [1, T], or None for full sequences.
            Steps t >= lengths[b] leave sequence b's state unchanged and emit zeros.
        reverse: run each sequence from lengths[b]-1 down to 0.
        backend: "reference", "triton", "cuda" or "auto" (FUSEDRNN_BACKEND applies).
        w_hr: (P, H) LSTM projection (proj_size), or None.
        zoneout_h, zoneout_c: (T, B, P) and (T, B, H) zoneout masks, or None: after each
            step h_t = m_t h_{t-1} + (1 - m_t) h̃_t (c likewise, LSTM only), m_t 0/1 in
            training and p in eval (fusedrnn/regularisers.py draws them).
        drop_h: (B, P) recurrent-dropout mask (already scaled by 1/(1-p)), or None: it
            multiplies h_{t-1} where it enters the recurrent product, at every step.

    Both directions of a bidirectional layer: h0 (2, B, P) and every other argument
    stacked the same way — gx (T, B, 2*G*H) (direction d's gates at [d*G*H, (d+1)*G*H),
    i.e. one GEMM with cat(W_ih_fwd, W_ih_bwd)), c0 (2, B, H), w_hh (2, G*H, P), b_hh
    (2, G*H), w_hr (2, P, H), the masks (T, B, 2*P), (T, B, 2*H), (2, B, P) — with reverse=False:
    direction 1 runs each sequence backward.
    y is then (T, B, 2*P) in torch.nn's layout and hT/cT (2, B, ·). A kernel backend runs
    both directions in one launch where its `unsupported(..., directions=2)` allows,
    else one launch per direction.

    Under torch.autocast for gx's device, float32 arguments are cast to the autocast
    dtype first (as torch.nn's cuDNN and oneDNN RNNs do); the recurrence itself then
    runs with autocast off and accumulates in float32.

    Returns:
        (y, hT, cT) for "lstm", (y, hT) otherwise; y (T, B, P) (one direction) in gx's
        dtype, hT/cT each sequence's state after its own last step.
    """
    autocast, (gx, h0, c0, w_hh, b_hh, w_hr) = _autocast_args(gx, h0, c0, w_hh, b_hh, w_hr)
    check_recurrence_args(cell, gx, h0, c0, w_hh, b_hh, lengths, w_hr, reverse)
    masks = {k: v for k, v in (("zoneout_h", zoneout_h), ("zoneout_c", zoneout_c), ("drop_h", drop_h))
             if v is not None}
    check_masks(cell, gx, h0, **masks)
    if backend == "torch":
        raise ValueError("backend 'torch' runs whole torch.nn modules; fusedrnn.ops.recurrence takes "
                         "'reference', 'triton', 'cuda' or 'auto'")
    H = w_hh.shape[-2] // GATES[cell]
    P = w_hr.shape[-2] if w_hr is not None else 0
    D = h0.dim() - 1
    batch, steps = backends.table_sizes(gx.shape[1], gx.shape[0])
    name = backends.choose_name(backend, gx.device, cell, gx.dtype, H, P, batch, steps,
                                _records_grad(gx, h0, c0, w_hh, b_hh, w_hr), D, bool(masks))
    if D == 2 and not backends.runs_two_directions(name, cell, gx.dtype, H, P):
        return per_direction(lambda *args, **kw: _run(name, autocast, *args, **kw), cell, gx, h0, c0, w_hh, b_hh,
                             lengths, w_hr, **masks)
    return _run(name, autocast, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr, **masks)


def run(name: str, cell: str, gx: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None, w_hh: torch.Tensor,
        b_hh: torch.Tensor | None, lengths: torch.Tensor | None = None, reverse: bool = False,
        w_hr: torch.Tensor | None = None, **masks):
    """`recurrence` for a caller that has already checked the arguments (as torch.nn checks
    them) and resolved the backend: `name` is "reference", "triton" or "cuda", and stacked
    two-direction arguments only where `backends.runs_two_directions` said yes (the caller
    asked it once: fusedrnn.functional). The module and cell paths call it, so a decode step
    validates its input once. Autocast applies as in `recurrence`; `masks`: the regularisers'
    keywords that are given (zoneout_h, zoneout_c, drop_h), drawn by the caller."""
    autocast, (gx, h0, c0, w_hh, b_hh, w_hr) = _autocast_args(gx, h0, c0, w_hh, b_hh, w_hr)
    return _run(name, autocast, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr, **masks)


def _autocast_args(gx, h0, c0, w_hh, b_hh, w_hr):
    """(autocast on for gx's device, the arguments): under autocast, like torch.nn's cuDNN /
    oneDNN RNN, every float32 argument in the autocast dtype."""
    args = (gx, h0, c0, w_hh, b_hh, w_hr)
    if not torch._C._is_any_autocast_enabled():
        return False, args
    device_type = gx.device.type if isinstance(gx, torch.Tensor) else "cpu"
    if not (torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)):
        return False, args
    low = torch.get_autocast_dtype(device_type)
    return True, tuple(t.to(low) if isinstance(t, torch.Tensor) and t.dtype == torch.float32 else t for t in args)


def _records_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _run(name, autocast, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr, **masks):
    # the recurrence accumulates in float32 itself; autocast must not downcast its matmuls
    with torch.autocast(gx.device.type, enabled=False) if autocast else _NO_CONTEXT:
        # under torch.func transforms and forward-mode AD the kernels have no rule: the reference runs
        if name in ("reference", "torch") or autodiff.transformed(gx, h0, c0, w_hh, b_hh, lengths, w_hr,
                                                                  *masks.values()):
            return reference.recurrence(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr, **masks)
        if torch.compiler.is_compiling():  # the backend choice saw no sizes (backends.table_sizes): check here
            G, D = GATES[cell], h0.dim() - 1
            check_int32_indexing(gx.shape[0], gx.shape[1], G, w_hh.shape[-2] // G, w_hh.shape[-1], D)
        # the module's import name, not the module: importing stays out of compiled graphs
        return library.run_layer(backends.KERNEL_BACKENDS[name], cell, gx, h0, c0, w_hh, b_hh, lengths, reverse,
                                 w_hr, **masks)
