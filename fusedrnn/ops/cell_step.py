"""One time step of a cell (fusedrnn.LSTMCell / GRUCell / RNNCell) for arguments the caller
has already checked, on a backend it has already resolved.

A step is the input projection `x W_ihᵀ + b_ih` (one GEMM, torch) followed by the recurrence
at T=1 through `fusedrnn.ops.run`: the same path as a sequence — the custom ops of
fusedrnn/ops/library.py when autograd records the call, the backend's forward called
directly when it does not — so cells and sequences share one autograd path.

A kernel backend may also export

    step(cell, x (B,I), h0 (B,H), c0 (B,H) or None, w_ih (G*H,I), w_hh (G*H,H),
         b_ih (G*H,) or None, b_hh (G*H,) or None) -> (h (B,H), c (B,H) or None)

one fused launch for both GEMMs and the pointwise update. It is used where autograd records
nothing (decoding), outside autocast and torch.compile — by the cells, and by the modules for
a T=1 call without projections (fusedrnn.functional, per layer and direction); with autograd
the step runs as above, whose backward is the recurrence's at T=1 plus the input GEMM's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import backends
from . import autodiff, library, run
from .common import GRU_RESET_BEFORE


def step(name: str, cell: str, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
         w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor | None, b_hh: torch.Tensor | None, **masks):
    """(h, c) after one step (c None except for "lstm"); `name`: "reference", "triton" or "cuda".
    `masks`: the regularisers' masks at T = 1 (fusedrnn/regularisers.py), which only the recurrence
    takes (never the fused step)."""
    fn = None if masks else fused_step(name, x, (h0, c0, w_ih, w_hh, b_ih, b_hh), cell)
    if fn is not None:
        with library.one_launch_at_a_time():
            return fn(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    gx = F.linear(x, w_ih, b_ih).unsqueeze(0)  # (1, B, G*H)
    outs = run(name, cell, gx, h0, c0, w_hh, b_hh, **masks)
    return outs[1], (outs[2] if cell == "lstm" else None)


def fused_step(name: str, x: torch.Tensor, tensors, cell: str):
    """Backend `name`'s step(...) if it exports one and this call may use it (plain eager, no
    autocast, nothing for autograd to record, no torch.func transform or forward-mode tangent),
    else None. `tensors`: the call's other tensors (a tuple; None allowed). The GRU with
    reset_after=False has no fused step (its step runs as the recurrence at T=1)."""
    if name == "reference" or cell == GRU_RESET_BEFORE or not eager_without_autograd(x, tensors):
        return None
    return getattr(library.kernels_module(backends.KERNEL_BACKENDS[name]), "step", None)


def eager_without_autograd(x: torch.Tensor, tensors: tuple) -> bool:
    """Whether a call on x and `tensors` (None allowed) runs in plain eager mode with nothing for
    autograd to record: no autocast, no grad recorded, not traced or compiled, no tensor subclass
    (fake, functional), no torch.func transform (vmap over a state: the recurrence's path, even
    with x plain) and no forward-mode tangent. Cheapest tests first: a decode step asks it."""
    if torch._C._is_any_autocast_enabled() or type(x) is not torch.Tensor:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(t is not None and t.requires_grad for t in tensors)):
        return False
    return not torch.compiler.is_compiling() and not torch._C._is_tracing() and not autodiff.transformed(x, *tensors)
