"""The autograd Function shared by the kernel backends (triton, cuda).

A kernel backend implements only the sequential parts of the contract:

    forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad)
        -> y (T,B,H), hT (B,H), cT (B,H) or None, saved: tuple of tensors
    backward(cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y, saved)
        -> d_gx (T,B,G*H) in gx's dtype, d_gh (T,B,G*H), dh0 (B,H), dc0 (B,H) or None

where d_gx is the gradient of the pre-activations fed by gx and d_gh that of the
ones fed by h W_hhᵀ + b_hh (they differ only in GRU's n gate: d_gh_n = r ⊙ d_gx_n;
elsewhere a backend may return the same tensor twice). Everything else, the weight
gradients as GEMMs outside the time loop, happens here once for every backend.

What a backend may rely on, and must guarantee:
- every tensor argument is contiguous (strided and stride-0 views are copied first;
  kernels compute their own offsets), and `lengths` is an int32 tensor on gx's device
  with values in [1, T], or None;
- `y` in backward is the forward's `y`, unchanged: the caller keeps a private copy for
  backward (the user's `y` may be modified in place, which torch.nn allows), so a
  backend reads `y` (or its own `saved`) freely and never the user's tensor;
- padded steps (t >= lengths[b]) contribute exactly nothing: y is zero there, the state
  is carried unchanged, and d_gx, d_gh are exactly zero there in backward whatever gx
  holds at those steps (NaN and inf included): select with a mask, never multiply a
  zero by a value computed from a padded step (0 * NaN is NaN);
- the weight-gradient GEMM pairs d_gh[t] with the state entering step t
  (`common.prev_states`), which is zero at padded steps, so it adds nothing there.

For torch.compile and meta tensors a backend also exports

    saved_shapes(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad)
        -> list of (shape, dtype), one per tensor of `saved`, in order

(it gets the forward's arguments, possibly fake tensors, and must not read their
values). `saved` must hold fresh tensors: a view of an input or of y/hT/cT is cloned
(custom ops may not return aliases). `run` goes through the torch.library custom ops
of fusedrnn/ops/library.py, so eager and compiled code share one path;
FusedRecurrence is the equivalent plain autograd.Function, kept as a cross-check.
"""
from __future__ import annotations

import torch

from . import library
from .common import prev_states, weight_grads


class FusedRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernels, cell, reverse, lengths, gx, h0, c0, w_hh, b_hh):
        need_grad = any(ctx.needs_input_grad[4:])
        with library.one_launch_at_a_time():
            y, hT, cT, saved = kernels.forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad)
        ctx.kernels, ctx.cell, ctx.reverse = kernels, cell, reverse
        ctx.has_c0, ctx.has_bias, ctx.n_saved = c0 is not None, b_hh is not None, len(saved)
        opt = lambda t: t if t is not None else torch.empty(0)  # noqa: E731  (save_for_backward wants tensors)
        # a private copy of y, not the returned y: the user may modify that one in place
        ctx.save_for_backward(gx, h0, opt(c0), w_hh, opt(b_hh), opt(lengths), y.clone(), *saved)
        ctx.has_lengths = lengths is not None
        ctx.mark_non_differentiable(*saved)
        outs = (y, hT) + ((cT,) if cT is not None else ())
        return outs + tuple(saved)

    @staticmethod
    def backward(ctx, dy, dhT, *rest):
        gx, h0, c0, w_hh, b_hh, lengths, y, *saved = ctx.saved_tensors
        c0 = c0 if ctx.has_c0 else None
        b_hh = b_hh if ctx.has_bias else None
        lengths = lengths if ctx.has_lengths else None
        dcT = rest[0] if ctx.has_c0 else None
        zeros = lambda t, like: torch.zeros_like(like) if t is None else t.contiguous()  # noqa: E731
        dy, dhT = zeros(dy, y), zeros(dhT, h0)
        dcT = zeros(dcT, c0) if ctx.has_c0 else None
        with library.one_launch_at_a_time():
            d_gx, d_gh, dh0, dc0 = ctx.kernels.backward(ctx.cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh,
                                                        lengths, ctx.reverse, y, saved)
        dw, db = weight_grads(d_gh, prev_states(y, h0, lengths, ctx.reverse), ctx.has_bias, w_hh.dtype)
        return None, None, None, None, d_gx, dh0, dc0, dw, db


def run(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse):
    """Run through the custom ops; `kernels` is a backend module or its import name.

    Returns (y, hT, cT) for lstm, (y, hT) otherwise."""
    return library.recurrence(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse)


def run_function(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse):
    """Apply FusedRecurrence directly (no custom op); same results as `run`."""
    gx, h0, c0, w_hh, b_hh, lengths = library.kernel_args(gx, h0, c0, w_hh, b_hh, lengths)
    outs = FusedRecurrence.apply(kernels, cell, reverse, lengths, gx, h0, c0, w_hh, b_hh)
    return outs[:3] if cell == "lstm" else outs[:2]
