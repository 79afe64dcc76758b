"""backend="triton": the recurrence contract of docs/design.md as fused Triton kernels.

kernels.py holds the one forward and one backward kernel of every cell, cells.py the
cells' pointwise math, tiles.py the tile pieces the kernels share, launch.py the
launchers, config.py the tuning table and the layout choice (model.py its latency
model), timeouts.py the grid-barrier timeout checks; step_kernel.py and step_launch.py
the fused decode step (`step`). The functions below are the
kernel-backend interface of docs/design.md ("The kernel contract", v2): the LSTM projection
(`w_hr`) and two directions in one launch (h0 (D, B, P), gx (T, B, D*G*H), y (T, B, D*P)).
"""
from __future__ import annotations

import torch

try:
    import triton  # noqa: F401
    _IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover - triton is a dependency of this package
    _IMPORT_ERROR = e

if _IMPORT_ERROR is None:
    from . import config, launch, step_launch, timeouts
    from .launch import backward, forward  # noqa: F401  (the contract's forward and backward are the launchers)

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def availability(device: torch.device) -> str | None:
    """None if the Triton kernels can run on `device`, else why not."""
    if _IMPORT_ERROR is not None:
        return f"triton cannot be imported ({_IMPORT_ERROR})"
    device = torch.device(device)
    if device.type == "cuda":
        if config.INTERPRET:
            return None  # the interpreter copies CUDA tensors to the host and back
        return None if torch.cuda.is_available() else "CUDA is not available"
    if device.type == "cpu":
        if config.INTERPRET:
            return None
        return "Triton kernels run on CUDA devices (or on the CPU only with TRITON_INTERPRET=1 set before import)"
    return f"Triton kernels do not run on {device.type} devices"


def unsupported(cell: str, dtype, hidden_size: int, proj_size: int = 0, directions: int = 1,
                regularised: bool = False) -> str | None:
    """None if the kernels support this call, else a readable reason: every cell, float32,
    bfloat16 and float16, the LSTM projection, one or two directions (one launch), and zoneout
    and recurrent dropout (`regularised`) with every cell, reset_after=False and proj_size included."""
    if proj_size and cell != "lstm":
        return f"proj_size applies to the LSTM only, not {cell}"
    if directions not in (1, 2):
        return f"the Triton kernels run 1 or 2 directions, not {directions}"
    if dtype is not None and dtype not in _DTYPES:
        return f"the Triton kernels support float32, bfloat16 and float16, not {dtype}"
    return None


def saved_shapes(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr=None, zoneout_h=None,
                 zoneout_c=None, drop_h=None):
    if not need_grad:
        return []
    n = launch.sizes(cell, gx, h0)
    return launch.saved_shapes(cell, n.T, n.B, n.H, w_hr is not None, n.D)


def step(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """One fused launch for a decode step (fusedrnn/ops/cell_step.py): (h (B,H), c (B,H) or None)."""
    reason = availability(x.device)
    if reason is not None:
        raise RuntimeError(f"fusedrnn triton backend: {reason}")
    return step_launch.step(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh)


def check_barriers(block: bool = True) -> None:
    """Raise RuntimeError if an earlier barrier-grid launch timed out (block: wait for them);
    fusedrnn.check_timeouts, which covers the cuda backend's launches too."""
    timeouts.check(block)
