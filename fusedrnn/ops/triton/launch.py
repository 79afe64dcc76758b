"""Launchers of the fused recurrence kernels (kernels.py) for every cell: buffers, the
configuration (config.choose on the device's limits), the arguments, the timeout check.

Dimensions: T steps, B batch, H hidden units, G gates, SA fp32 values saved per unit
and step. `fwd_args` / `bwd_args` build a launch's full argument list from tensors or
stand-ins (`triton.runtime.jit.MockTensor`); the compile gate calls them too, so it
compiles exactly what these launchers launch.
"""
from __future__ import annotations

import torch

from . import config, kernels, timeouts
from .cells import CELLS, GATES, SAVED_SLOTS, SAVES_STATE


#: bits of the kernels' runtime `flags` argument
FLAG_BIAS, FLAG_LEN, FLAG_REVERSE, FLAG_SAVE = 1, 2, 4, 8


def n_gates(cell: str) -> int:
    return GATES[CELLS[cell]]


def saved_shapes(cell: str, T: int, B: int, H: int) -> list:
    """What the forward saves for the backward: activations (T,B,SA*H), then for LSTM/GRU
    the state entering each step (T,B,H); all fp32."""
    c = CELLS[cell]
    shapes = [((T, B, SAVED_SLOTS[c] * H), torch.float32)]
    if SAVES_STATE[c]:
        shapes.append(((T, B, H), torch.float32))
    return shapes


def new_out(shape, dtype, device) -> torch.Tensor:
    """An output buffer the kernel fully writes (NaN-filled in debug mode)."""
    if config.DEBUG:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _require_contiguous(**tensors) -> None:
    """The kernels address raw memory with contiguous strides: refuse anything else."""
    for name, t in tensors.items():
        if t is not None and not t.is_contiguous():
            raise RuntimeError(f"fusedrnn triton: {name} must be contiguous (shape {tuple(t.shape)}, strides "
                               f"{t.stride()}); the kernels read raw memory")


def _options(launch: config.Launch) -> dict:
    # maxnreg: without a cap in the PTX, ptxas limits itself (~96 registers at 128 threads)
    # and spills; these kernels run one program per SM, so let it use what it needs
    return dict(num_warps=launch.num_warps, num_stages=launch.num_stages, launch_cooperative_grid=launch.BARRIER,
                maxnreg=config.TUNING["maxnreg"])


def _prec() -> str:
    return "ieee" if config.INTERPRET else "tf32x3"


def fwd_args(cell, launch, gx, w_hh, b_hh, lengths, y, hbuf, cbuf, acts, state, sync, T, B, H, reverse, save,
             spin_limit=None):
    """(positional args, keyword args) of recurrence_fwd_kernel. Absent optional tensors
    are replaced by stand-ins of the same element type, so the compiled kernel is the same
    for every flag combination."""
    args = (gx, w_hh, b_hh if b_hh is not None else w_hh, lengths if lengths is not None else sync, y, hbuf, cbuf,
            acts, state, sync, T, B, H,
            FLAG_BIAS * (b_hh is not None) + FLAG_LEN * (lengths is not None) + FLAG_REVERSE * bool(reverse)
            + FLAG_SAVE * bool(save), spin_limit if spin_limit is not None else config.TUNING["spin_limit"])
    return args, dict(CELL=CELLS[cell], **launch.constexprs(), PREC=_prec(), INTERP=config.INTERPRET,
                      **_options(launch))


def bwd_args(cell, launch, dy, w_hh, lengths, acts, state, d_gh, d_gx, dh, dc, sync, T, B, H, reverse,
             write_dgx, spin_limit=None):
    """(positional args, keyword args) of recurrence_bwd_kernel (see fwd_args)."""
    args = (dy, w_hh, lengths if lengths is not None else sync, acts, state, d_gh, d_gx, dh, dc, sync, T, B, H,
            FLAG_LEN * (lengths is not None) + FLAG_REVERSE * bool(reverse), spin_limit if spin_limit is not None else config.TUNING["spin_limit"])
    return args, dict(CELL=CELLS[cell], **launch.constexprs(), WRITE_DGX=bool(write_dgx), PREC=_prec(),
                      INTERP=config.INTERPRET, **_options(launch))


def writes_dgx(cell: str, dtype: torch.dtype) -> bool:
    """d_gx is a tensor of its own unless it equals d_gh (fp32, any cell but the GRU)."""
    return cell == "gru" or dtype != torch.float32


def forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
    """Launch the forward; returns y (T,B,H), hT (B,H), cT (B,H) or None, saved."""
    timeouts.check()
    _require_contiguous(gx=gx, h0=h0, c0=c0, w_hh=w_hh, b_hh=b_hh, lengths=lengths)
    if lengths is not None and lengths.dtype != torch.int32:
        raise RuntimeError(f"fusedrnn triton: lengths must be int32, got {lengths.dtype}")
    T, B, GH = gx.shape
    H = GH // n_gates(cell)
    dev = gx.device
    launch = config.choose(cell, B, H, gx.dtype, config.device_limits(dev), "fwd")
    y = new_out((T, B, H), gx.dtype, dev)
    hbuf = torch.empty(2, B, H, dtype=torch.float32, device=dev)
    hbuf[0].copy_(h0)
    cbuf = c0.to(torch.float32, copy=True) if cell == "lstm" else hbuf
    saved = tuple(new_out(s, d, dev) for s, d in saved_shapes(cell, T, B, H)) if need_grad else ()
    acts = saved[0] if saved else hbuf
    state = saved[1] if len(saved) > 1 else hbuf
    sync = timeouts.new_sync(launch.grid[1], dev)
    args, kw = fwd_args(cell, launch, gx, w_hh, b_hh, lengths, y, hbuf, cbuf, acts, state, sync, T, B, H, reverse,
                        need_grad)
    kernels.recurrence_fwd_kernel[launch.grid](*args, **kw)
    timeouts.after_launch(sync, launch, f"the {cell} forward (grid {launch.grid})")
    cT = cbuf.to(gx.dtype, copy=True) if cell == "lstm" else None
    return y, hbuf[T % 2].to(gx.dtype, copy=True), cT, saved


def backward(cell, dy, dhT, dcT, gx, w_hh, lengths, reverse, saved):
    """Launch the backward; returns d_gx (T,B,G*H) in gx's dtype, d_gh (T,B,G*H) fp32, dh0, dc0 or None."""
    timeouts.check()
    _require_contiguous(dy=dy, dhT=dhT, dcT=dcT, gx=gx, w_hh=w_hh, lengths=lengths,
                        **{f"saved[{i}]": t for i, t in enumerate(saved)})
    T, B, GH = gx.shape
    H = GH // n_gates(cell)
    dev = gx.device
    launch = config.choose(cell, B, H, gx.dtype, config.device_limits(dev), "bwd")
    acts = saved[0]
    state = saved[1] if len(saved) > 1 else acts
    d_gh = new_out((T, B, GH), torch.float32, dev)
    write_dgx = writes_dgx(cell, gx.dtype)
    d_gx = new_out((T, B, GH), gx.dtype, dev) if write_dgx else d_gh
    dh = dhT.to(torch.float32, copy=True)
    dc = dcT.to(torch.float32, copy=True) if cell == "lstm" else dh
    sync = timeouts.new_sync(launch.grid[1], dev)
    args, kw = bwd_args(cell, launch, dy, w_hh, lengths, acts, state, d_gh, d_gx, dh, dc, sync, T, B, H, reverse,
                        write_dgx)
    kernels.recurrence_bwd_kernel[launch.grid](*args, **kw)
    timeouts.after_launch(sync, launch, f"the {cell} backward (grid {launch.grid})")
    dc0 = dc.to(gx.dtype) if cell == "lstm" else None
    return d_gx, d_gh, dh.to(gx.dtype), dc0
