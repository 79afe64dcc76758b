"""Launchers of the fused recurrence kernels (kernels.py) for every cell: buffers, the
configuration (config.choose on the device's limits), the arguments, the timeout check.

Dimensions: T steps, B batch, H hidden units, P the exchanged state's width (proj_size,
else H), D directions (h0 (B, P): 1; h0 (D, B, P): D), G gates, SA fp32 values saved per
unit and step. `fwd_args` / `bwd_args` build a launch's full argument list from tensors or
stand-ins (`triton.runtime.jit.MockTensor`); the compile gate calls them too, so it
compiles exactly what these launchers launch.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .. import timeouts as policy
from . import config, kernels, timeouts
from .cells import CELLS, GATES, SAVED_SLOTS, SAVES_STATE


#: bits of the kernels' runtime `flags` argument (DIR1: the launch runs direction 1 alone)
FLAG_BIAS, FLAG_LEN, FLAG_REVERSE, FLAG_SAVE, FLAG_DIR1 = 1, 2, 4, 8, 16


def n_gates(cell: str) -> int:
    return GATES[CELLS[cell]]


class Sizes(NamedTuple):
    T: int
    B: int
    H: int
    P: int
    D: int


def sizes(cell: str, gx: torch.Tensor, h0: torch.Tensor) -> Sizes:
    """T, B, H, P, D of a call from gx (T, B, D*G*H) and h0 ((B, P) or (D, B, P))."""
    D = 1 if h0.dim() == 2 else h0.shape[0]
    T, B, DGH = gx.shape
    return Sizes(T, B, DGH // (D * n_gates(cell)), h0.shape[-1], D)


def saved_shapes(cell: str, T: int, B: int, H: int, proj: bool = False, D: int = 1) -> list:
    """What the forward saves for the backward: activations (T,B,SA*H), then for LSTM/GRU
    the state entering each step (T,B,H), then with a projection m_t = o ⊙ tanh(c_t)
    (T,B,H) for dW_hr; all fp32, each with a leading D when there are two directions."""
    c = CELLS[cell]
    lead = (D,) if D > 1 else ()
    shapes = [((*lead, T, B, SAVED_SLOTS[c] * H), torch.float32)]
    if SAVES_STATE[c]:
        shapes.append(((*lead, T, B, H), torch.float32))
    if proj:
        shapes.append(((*lead, T, B, H), torch.float32))
    return shapes


def new_out(shape, dtype, device) -> torch.Tensor:
    """An output buffer the kernel fully writes (NaN-filled when checking, fusedrnn/ops/timeouts.py)."""
    if policy.poisoning():
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _require_contiguous(**tensors) -> None:
    """The kernels address raw memory with contiguous strides: refuse anything else."""
    for name, t in tensors.items():
        if t is not None and not t.is_contiguous():
            raise RuntimeError(f"fusedrnn triton: {name} must be contiguous (shape {tuple(t.shape)}, strides "
                               f"{t.stride()}); the kernels read raw memory")


#: which shape of contract v2 each checked argument has
_SHAPE_OF = {"h0": "h", "dhT": "h", "c0": "c", "dcT": "c", "w_hh": "w_hh", "b_hh": "b_hh", "w_hr": "w_hr", "dy": "y",
             "lengths": "lengths"}


def _require_shapes(cell: str, n: Sizes, **tensors) -> None:
    """Every tensor given has the shape of contract v2 for these sizes (the kernels trust them)."""
    T, B, H, P, D = n
    if D not in (1, 2):
        raise RuntimeError(f"fusedrnn triton: 1 or 2 directions, got {D}")
    if P != H and tensors.get("w_hr") is None:
        raise RuntimeError(f"fusedrnn triton: the state is {P} wide but the hidden size is {H} and there is no w_hr")
    G, lead = n_gates(cell), ((D,) if D > 1 else ())
    want = dict(h=(*lead, B, P), c=(*lead, B, H), w_hh=(*lead, G * H, P), b_hh=(*lead, G * H), w_hr=(*lead, P, H),
                y=(T, B, D * P), lengths=(B,))
    for name, t in tensors.items():
        if t is not None and tuple(t.shape) != want[_SHAPE_OF[name]]:
            raise RuntimeError(f"fusedrnn triton: {name} has shape {tuple(t.shape)}, expected "
                               f"{want[_SHAPE_OF[name]]} (T={T}, B={B}, H={H}, P={P}, D={D})")


def _options(launch: config.Launch) -> dict:
    # maxnreg: without a cap in the PTX, ptxas limits itself (~96 registers at 128 threads)
    # and spills; these kernels run one program per SM, so let it use what it needs
    return dict(num_warps=launch.num_warps, num_stages=launch.num_stages, launch_cooperative_grid=launch.BARRIER,
                maxnreg=config.TUNING["maxnreg"], **config.FP_FUSION)


def _prec() -> str:
    return "ieee" if config.INTERPRET else "tf32x3"


def _flags(b_hh, lengths, reverse, save, dir1) -> int:
    return (FLAG_BIAS * (b_hh is not None) + FLAG_LEN * (lengths is not None) + FLAG_REVERSE * bool(reverse)
            + FLAG_SAVE * bool(save) + FLAG_DIR1 * bool(dir1))


def _mask_args(masks, stand_in) -> tuple:
    """The kernels' (p_zh, p_zc, p_dm) and their constexprs: each mask, or a stand-in where off
    (the flag False: a kernel without them compiles as before)."""
    zh, zc, dm = masks if masks is not None else (None, None, None)
    ptrs = tuple(t if t is not None else stand_in for t in (zh, zc, dm))
    flags = {k: True for k, t in (("ZONE_H", zh), ("ZONE_C", zc), ("DROP", dm)) if t is not None}
    return ptrs, flags


def fwd_args(cell, launch, gx, w_hh, b_hh, w_hr, lengths, y, hbuf, cbuf, mbuf, acts, state, sync, n: Sizes, reverse,
             save, dir1=False, spin_limit=None, masks=None):
    """(positional args, keyword args) of recurrence_fwd_kernel. Absent optional tensors
    are replaced by stand-ins of the same element type, so the compiled kernel is the same
    for every flag combination. dir1: this launch runs direction 1 alone. masks: the fp32
    (zoneout_h, zoneout_c, drop_h) or None (with drop_h, mbuf holds the unmasked state)."""
    ptrs, mask_flags = _mask_args(masks, hbuf)
    args = (gx, w_hh, b_hh if b_hh is not None else w_hh, w_hr if w_hr is not None else w_hh,
            lengths if lengths is not None else sync, y, hbuf, cbuf, mbuf, acts, state, sync, *ptrs,
            n.T, n.B, n.H, n.P, n.D, _flags(b_hh, lengths, reverse, save, dir1),
            spin_limit if spin_limit is not None else timeouts.spin_limit())
    return args, dict(CELL=CELLS[cell], **launch.constexprs(), PREC=_prec(), INTERP=config.INTERPRET,
                      **mask_flags, **_options(launch))


def bwd_args(cell, launch, dy, w_hh, w_hr, lengths, acts, state, d_gh, d_gx, gbuf, dh, dc, sync, n: Sizes, reverse,
             write_dgx, dir1=False, spin_limit=None, masks=None):
    """(positional args, keyword args) of recurrence_bwd_kernel (see fwd_args)."""
    G = config.resident_bwd_gates(cell)
    if launch.RESIDENT and not launch.CARRY and launch.KP * launch.NKP < G * n.H:
        # a resident grid backward contracts over G*H rows at once (steps.resident_w_bwd)
        raise ValueError(f"fusedrnn triton: a resident backward launch covers {launch.KP * launch.NKP} rows of "
                         f"W_hh, fewer than the {G * n.H} it contracts (G*H)")
    ptrs, mask_flags = _mask_args(masks, dh)
    args = (dy, w_hh, w_hr if w_hr is not None else w_hh, lengths if lengths is not None else sync, acts, state, d_gh,
            d_gx, gbuf, dh, dc, sync, *ptrs, n.T, n.B, n.H, n.P, n.D, _flags(None, lengths, reverse, False, dir1),
            spin_limit if spin_limit is not None else timeouts.spin_limit())
    return args, dict(CELL=CELLS[cell], **launch.constexprs(), WRITE_DGX=bool(write_dgx), PREC=_prec(),
                      INTERP=config.INTERPRET, **mask_flags, **_options(launch))


def writes_dgx(cell: str, dtype: torch.dtype) -> bool:
    """d_gx is a tensor of its own unless it equals d_gh (fp32, any cell but the GRU)."""
    return cell == "gru" or dtype != torch.float32


def _launch_all(kernel, launch, what, make_args, dev):
    """Launch `kernel` for every direction: once with grid axis 2 holding both, or once per
    direction in turn; each launch gets its own zeroed barrier counters."""
    for first in range(0, launch.D, launch.grid[2]):
        sync = timeouts.new_sync(launch.grid[1] * launch.grid[2], dev)
        args, kw = make_args(sync, first == 1)
        kernel[launch.grid](*args, **kw)
        timeouts.after_launch(sync, launch, f"{what} (grid {launch.grid})")


def _check_call(cell, gx, h0, lengths, reverse, n: Sizes) -> None:
    if lengths is not None and lengths.dtype != torch.int32:
        raise RuntimeError(f"fusedrnn triton: lengths must be int32, got {lengths.dtype}")
    if n.D == 2 and reverse:
        raise RuntimeError("fusedrnn triton: with two directions `reverse` must be False (direction 1 runs each "
                           "sequence backward in time)")
    if gx.shape[2] != n.D * n_gates(cell) * n.H:
        raise RuntimeError(f"fusedrnn triton: gx has {gx.shape[2]} columns, not a multiple of D*G = "
                           f"{n.D * n_gates(cell)}")


def _fp32_masks(zoneout_h, zoneout_c, drop_h, D, B, P):
    """The masks as the kernels read them (fp32, contiguous; drop_h as (D, B, P)), or None for none."""
    if zoneout_h is None and zoneout_c is None and drop_h is None:
        return None
    f = lambda t: t.to(torch.float32).contiguous() if t is not None else None  # noqa: E731
    return f(zoneout_h), f(zoneout_c), (f(drop_h).view(D, B, P) if drop_h is not None else None)


def forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr=None, zoneout_h=None, zoneout_c=None,
            drop_h=None):
    """Launch the forward; returns y (T,B,D*P), hT and cT (or None) shaped like h0 and c0, saved.
    The regularisers' masks: docs/design.md (with w_hr, zoneout_h is P wide, zoneout_c H wide)."""
    timeouts.check()
    _require_contiguous(gx=gx, h0=h0, c0=c0, w_hh=w_hh, b_hh=b_hh, w_hr=w_hr, lengths=lengths)
    n = sizes(cell, gx, h0)
    _check_call(cell, gx, h0, lengths, reverse, n)
    _require_shapes(cell, n, h0=h0, c0=c0, w_hh=w_hh, b_hh=b_hh, w_hr=w_hr, lengths=lengths)
    T, B, H, P, D = n
    dev = gx.device
    regularised = zoneout_h is not None or zoneout_c is not None or drop_h is not None
    launch = config.choose(cell, B, H, gx.dtype, config.device_limits(dev), "fwd",
                           proj=P if w_hr is not None else 0, directions=D, regularised=regularised)
    y = new_out((T, B, D * P), gx.dtype, dev)
    # [d, 0] h0, [d, T % 2] hT, the exchange between; with w_hr and drop_h [d, 2] the unmasked state
    hbuf = torch.empty(D, 3 if w_hr is not None and drop_h is not None else 2, B, P, dtype=torch.float32, device=dev)
    hbuf[:, 0].copy_(h0.view(D, B, P))
    cbuf = c0.view(D, B, H).to(torch.float32, copy=True) if cell == "lstm" else hbuf
    saved = tuple(new_out(s, d, dev) for s, d in saved_shapes(cell, T, B, H, w_hr is not None, D)) if need_grad else ()
    acts = saved[0] if saved else hbuf
    state = saved[1] if len(saved) > 1 else hbuf
    mbuf = hbuf
    masks = _fp32_masks(zoneout_h, zoneout_c, drop_h, D, B, P)
    if w_hr is not None:  # m_t: kept for dW_hr, or only exchanged between the phases of a step
        mbuf = saved[2] if need_grad else torch.empty(D, B, H, dtype=torch.float32, device=dev)
    elif cell == "gru_reset_before" or drop_h is not None:
        # [d, 0]: r ⊙ h_{t-1}, exchanged between the reset-before GRU's phases; [d, -1] with drop_h:
        # the state itself, while the exchange carries d ⊙ h, the product's operand
        mbuf = torch.empty(D, (cell == "gru_reset_before") + (drop_h is not None), B, H, dtype=torch.float32,
                           device=dev)
    state_now = hbuf[:, T % 2]  # where the kernel leaves hT
    if drop_h is not None:  # the state itself, while the exchange carries d ⊙ h
        state_now = hbuf[:, 2] if w_hr is not None else mbuf[:, -1]
        state_now.copy_(hbuf[:, 0])
        hbuf[:, 0].mul_(masks[2])

    def make_args(sync, dir1):
        return fwd_args(cell, launch, gx, w_hh, b_hh, w_hr, lengths, y, hbuf, cbuf, mbuf, acts, state, sync, n,
                        reverse, need_grad, dir1, masks=masks)

    _launch_all(kernels.recurrence_fwd_kernel, launch, f"the {cell} forward", make_args, dev)
    cT = cbuf.to(gx.dtype, copy=True).view(c0.shape) if cell == "lstm" else None
    return y, state_now.to(gx.dtype, copy=True).reshape(h0.shape), cT, saved


def backward(cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y, saved, w_hr=None, zoneout_h=None,
             zoneout_c=None, drop_h=None):
    """Launch the backward (h0, c0, b_hh and y unused: `saved` holds what it needs); returns d_gx (T,B,D*G*H) in gx's dtype, d_gh (T,B,D*G*H) fp32,
    dh0, dc0 or None (shaped like dhT, dcT), and with w_hr also dW_hr in w_hr's dtype."""
    timeouts.check()
    _require_contiguous(dy=dy, dhT=dhT, dcT=dcT, gx=gx, w_hh=w_hh, w_hr=w_hr, lengths=lengths,
                        **{f"saved[{i}]": t for i, t in enumerate(saved)})
    n = sizes(cell, gx, dhT)
    _check_call(cell, gx, dhT, lengths, reverse, n)
    _require_shapes(cell, n, dhT=dhT, dcT=dcT, w_hh=w_hh, w_hr=w_hr, dy=dy, lengths=lengths)
    T, B, H, P, D = n
    dev = gx.device
    proj = w_hr is not None
    want = saved_shapes(cell, T, B, H, proj, D)
    if [tuple(t.shape) for t in saved] != [s for s, _ in want]:
        raise RuntimeError(f"fusedrnn triton: saved tensors of shapes {[tuple(t.shape) for t in saved]}, expected "
                           f"{[s for s, _ in want]} (from a forward with need_grad and the same arguments)")
    regularised = zoneout_h is not None or zoneout_c is not None or drop_h is not None
    launch = config.choose(cell, B, H, gx.dtype, config.device_limits(dev), "bwd", proj=P if proj else 0,
                           directions=D, regularised=regularised)
    acts = saved[0]
    state = saved[1] if len(saved) > 1 else acts
    d_gh = new_out((T, B, D * n_gates(cell) * H), torch.float32, dev)
    write_dgx = writes_dgx(cell, gx.dtype)
    d_gx = new_out(d_gh.shape, gx.dtype, dev) if write_dgx else d_gh
    dh = dhT.to(torch.float32, copy=True)
    dc = dcT.to(torch.float32, copy=True) if cell == "lstm" else dh
    gbuf = new_out((D, T, B, P), torch.float32, dev) if proj else dh  # the gradient reaching each h_t

    masks = _fp32_masks(zoneout_h, zoneout_c, drop_h, D, B, P)

    def make_args(sync, dir1):
        return bwd_args(cell, launch, dy, w_hh, w_hr, lengths, acts, state, d_gh, d_gx, gbuf, dh, dc, sync, n,
                        reverse, write_dgx, dir1, masks=masks)

    _launch_all(kernels.recurrence_bwd_kernel, launch, f"the {cell} backward", make_args, dev)
    dc0 = dc.to(gx.dtype) if cell == "lstm" else None
    if not proj:
        return d_gx, d_gh, dh.to(gx.dtype), dc0
    # dW_hr = Σ_t g_tᵀ m_t: one fp32 GEMM per direction over all steps and rows
    m = saved[2].view(D, T * B, H)
    dw_hr = torch.bmm(gbuf.view(D, T * B, P).transpose(1, 2), m).to(w_hr.dtype).view(w_hr.shape)
    return d_gx, d_gh, dh.to(gx.dtype), dc0, dw_hr
