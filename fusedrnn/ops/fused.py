"""The autograd Function shared by the kernel backends (triton, cuda), and the kernel-backend
contract (v2: LSTM projections inside the kernels, both directions of a layer in one call).

Notation: T steps, B batch, H hidden, P = proj_size if projecting else H, G gates (LSTM 4,
GRU 3, RNN 1), D directions (1 or 2). A kernel backend implements only the sequential parts:

    forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr=None)
        -> y, hT, cT or None, saved (tuple of fresh tensors)
    backward(cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y, saved, w_hr=None)
        -> (d_gx, d_gh, dh0, dc0)            when w_hr is None
        -> (d_gx, d_gh, dh0, dc0, dw_hr)     when w_hr is given
    saved_shapes(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr=None)
        -> list of (shape, dtype), one per tensor of `saved`, in order
    unsupported(cell, dtype, hidden_size, proj_size, directions=1) -> None or a reason
    availability(device) -> None or a reason
    step(...)   optional, one fused cell step (fusedrnn/ops/cell_step.py)

`w_hr` is passed (as a keyword) only when a projection is given, so a backend whose
`unsupported` refuses proj_size never sees it. Shapes — D is h0.dim() - 1:

    tensor                 D = 1           D = 2
    gx, d_gx, d_gh         (T, B, G*H)     (T, B, 2*G*H): direction d's gates at [d*G*H, (d+1)*G*H),
                                            i.e. x @ cat(W_ih_fwd, W_ih_bwd)ᵀ + cat(b_ih), one GEMM
    h0, hT, dh0            (B, P)          (2, B, P)
    c0, cT, dc0 (LSTM)     (B, H)          (2, B, H)
    w_hh                   (G*H, P)        (2, G*H, P)
    b_hh                   (G*H,) or None  (2, G*H) or None
    w_hr, dw_hr            (P, H) or None  (2, P, H) or None   (LSTM with proj_size)
    y, dy                  (T, B, P)       (T, B, 2*P): direction d at [d*P, (d+1)*P), torch.nn's layout
    lengths                (B,) int32 or None, shared by both directions

- With D = 2, `reverse` is False: direction 0 runs forward in time, direction 1 runs each
  sequence backward from lengths[b]-1 down to 0 (torch.nn's reverse direction). With
  D = 1, `reverse` picks the direction. A backend whose `unsupported(..., directions=2)`
  gives a reason is called once per direction (D = 1 calls, `common.per_direction`).
- Projection (LSTM, w_hr given): c_t as usual, m_t = o_t ⊙ tanh(c_t) (H wide), h_t = m_t
  W_hrᵀ (P wide); the recurrence exchanges the P-wide h_t and y_t = h_t. Backward: the
  gradient reaching h_t (dy_t plus the recurrent part, P wide) gives dm_t = dh_t W_hr,
  and the backend returns dw_hr = Σ_t dh_tᵀ m_t (fp32 accumulation, in w_hr's dtype).
- d_gx is the gradient of the pre-activations fed by gx and d_gh that of the ones fed by
  h W_hhᵀ + b_hh (they differ only in GRU's n gate: d_gh_n = r ⊙ d_gx_n; elsewhere a
  backend may return the same tensor twice). The weight gradients of W_hh and b_hh are
  GEMMs outside the time loop, computed here once for every backend:
  dW_hh[d] = Σ_t d_gh[t, :, d-block]ᵀ · (state entering step t of direction d).

What a backend may rely on, and must guarantee (per direction):
- every tensor argument is contiguous (strided and stride-0 views are copied first;
  kernels compute their own offsets), and `lengths` is an int32 tensor on gx's device
  with values in [1, T], or None;
- `y` in backward is the forward's `y`, unchanged: the caller keeps a private copy for
  backward (the user's `y` may be modified in place, which torch.nn allows), so a
  backend reads `y` (or its own `saved`) freely and never the user's tensor;
- padded steps (t >= lengths[b]) contribute exactly nothing: y is zero there, the state
  is carried unchanged, hT/cT are each sequence's state at its own last step, and d_gx,
  d_gh (and dw_hr's terms) are exactly zero there in backward whatever gx holds at those
  steps (NaN and inf included): select with a mask, never multiply a zero by a value
  computed from a padded step (0 * NaN is NaN);
- the state is carried and accumulated in fp32, outputs are stored in the input dtype
  (d_gh may stay fp32) and are tensors of their own, never views (the caller would copy
  a view: autograd forbids in-place ops on a view output, and users modify y in place);
- the weight-gradient GEMM pairs d_gh[t] with the state entering step t
  (`common.prev_states`), which is zero at padded steps, so it adds nothing there.

`saved_shapes` gets the forward's arguments, possibly fake tensors, and must not read
their values. `saved` must hold fresh tensors: a view of an input or of y/hT/cT is cloned
(custom ops may not return aliases). `run` goes through the torch.library custom ops of
fusedrnn/ops/library.py, so eager and compiled code share one path; FusedRecurrence is
the equivalent plain autograd.Function, kept as a cross-check. tests/support/contract.py checks
a backend module against the reference.
"""
from __future__ import annotations

import torch

from . import library
from .autodiff import reference_gradients, refuse_transformed
from .common import recurrent_weight_grads


class FusedRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernels, cell, reverse, lengths, gx, h0, c0, w_hh, b_hh, w_hr):
        need_grad = any(ctx.needs_input_grad[4:])
        with library.one_launch_at_a_time():
            y, hT, cT, saved = kernels.forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad,
                                               **library.projection(w_hr))
        ctx.kernels, ctx.cell, ctx.reverse = kernels, cell, reverse
        ctx.has_c0, ctx.has_bias, ctx.has_proj = c0 is not None, b_hh is not None, w_hr is not None
        opt = lambda t: t if t is not None else torch.empty(0)  # noqa: E731  (save_for_backward wants tensors)
        # a private copy of y, not the returned y: the user may modify that one in place
        ctx.save_for_backward(gx, h0, opt(c0), w_hh, opt(b_hh), opt(lengths), opt(w_hr), y.clone(), *saved)
        ctx.has_lengths = lengths is not None
        ctx.mark_non_differentiable(*saved)
        outs = (y, hT) + ((cT,) if cT is not None else ())
        return outs + tuple(saved)

    @staticmethod
    def backward(ctx, dy, dhT, *rest):
        gx, h0, c0, w_hh, b_hh, lengths, w_hr, y, *saved = ctx.saved_tensors
        c0 = c0 if ctx.has_c0 else None
        b_hh = b_hh if ctx.has_bias else None
        lengths = lengths if ctx.has_lengths else None
        w_hr = w_hr if ctx.has_proj else None
        dcT = rest[0] if ctx.has_c0 else None
        if torch.is_grad_enabled():  # backward(create_graph=True): the backward kernels are not differentiable
            return (None, None, None, None, *reference_gradients(ctx.cell, ctx.reverse, (dy, dhT, dcT), gx, h0, c0,
                                                                 w_hh, b_hh, lengths, w_hr))
        zeros = lambda t, like: torch.zeros_like(like) if t is None else t.contiguous()  # noqa: E731
        dy, dhT = zeros(dy, y), zeros(dhT, h0)
        dcT = zeros(dcT, c0) if ctx.has_c0 else None
        with library.one_launch_at_a_time():
            d_gx, d_gh, dh0, dc0, *dw_hr = ctx.kernels.backward(ctx.cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh,
                                                                lengths, ctx.reverse, y, saved,
                                                                **library.projection(w_hr))
        dw, db = recurrent_weight_grads(d_gh, y, h0, lengths, ctx.reverse, ctx.has_bias, w_hh.dtype)
        return None, None, None, None, d_gx, dh0, dc0, dw, db, (dw_hr[0] if ctx.has_proj else None)


def run(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr=None):
    """Run through the custom ops; `kernels` is a backend module or its import name.

    Returns (y, hT, cT) for lstm, (y, hT) otherwise."""
    return library.recurrence(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr)


def run_function(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr=None):
    """Apply FusedRecurrence directly (no custom op); same results as `run`."""
    gx, h0, c0, w_hh, b_hh, lengths, w_hr = library.kernel_args(gx, h0, c0, w_hh, b_hh, lengths, w_hr)
    refuse_transformed(kernels if isinstance(kernels, str) else kernels.__name__, gx, h0, c0, w_hh, b_hh, lengths, w_hr)
    outs = FusedRecurrence.apply(kernels, cell, reverse, lengths, gx, h0, c0, w_hh, b_hh, w_hr)
    return outs[:3] if cell == "lstm" else outs[:2]
