"""Pieces every backend of the recurrence contract shares: names, argument checks,
the step order, and the weight gradients computed outside the sequential loop.

Dimensions: T time steps, B batch, H hidden units, P state size fed back into
W_hh (P == H except for an LSTM with proj_size), G gates.
"""
from __future__ import annotations

import torch

from .. import regularisers
from ..cell_table import GATES, GRU_RESET_BEFORE, TORCH_CELLS, NAMES as CELLS  # noqa: F401  (re-exported)

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: the largest element index a kernel addresses with 32-bit arithmetic
INT32_MAX = 2**31 - 1


def step_order(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


def check_cell(cell: str) -> None:
    if cell not in GATES:
        raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(CELLS)}")


def directions_of(h0) -> int:
    """D of the contract: 1 for h0 (B, P), 2 for h0 (2, B, P) (both directions of a layer)."""
    return 2 if isinstance(h0, torch.Tensor) and h0.dim() == 3 else 1


def check_recurrence_args(cell, gx, h0, c0, w_hh, b_hh, lengths, w_hr=None, reverse=False) -> None:
    """Validate the contract's arguments; raise ValueError/RuntimeError before any launch.

    D = 1: gx (T,B,G*H) · h0 (B,P) · c0 (B,H) · w_hh (G*H,P) · b_hh (G*H,) · w_hr (P,H).
    D = 2 (h0 is 3-D): gx (T,B,2*G*H) · h0 (2,B,P) · c0 (2,B,H) · w_hh (2,G*H,P) ·
    b_hh (2,G*H) · w_hr (2,P,H), and reverse False (direction 1 runs backward in time).
    """
    check_cell(cell)
    G = GATES[cell]
    if not isinstance(gx, torch.Tensor) or gx.dim() != 3:
        raise ValueError(f"gx must be a 3-D tensor (T, B, G*H), got {_shape(gx)}")
    D = directions_of(h0)
    lead = (D,) if D == 2 else ()
    if D == 2 and h0.shape[0] != 2:
        raise ValueError(f"h0 must have shape (B, P) for one direction or (2, B, P) for two, got {_shape(h0)}")
    if D == 2 and reverse:
        raise ValueError("reverse must be False with two directions: direction 1 already runs "
                         "each sequence backward in time")
    T, B, DGH = gx.shape
    if T < 1 or B < 1 or DGH < 1 or DGH % (D * G):
        what = f"{G}*H" if D == 1 else f"2*{G}*H"
        raise ValueError(f"gx of shape {tuple(gx.shape)} is not (T>=1, B>=1, {what}) for cell {cell!r}")
    GH = DGH // D
    H = GH // G
    if gx.dtype not in FLOAT_DTYPES:
        raise TypeError(f"gx must be a floating tensor, got {gx.dtype}")
    if w_hr is not None and cell != "lstm":
        raise ValueError("w_hr (projection) exists only for the lstm cell")
    if w_hr is not None and (not isinstance(w_hr, torch.Tensor) or w_hr.dim() != len(lead) + 2):
        raise ValueError(f"w_hr must be a {len(lead) + 2}-D tensor ({'2, ' if lead else ''}P, H={H}), got {_shape(w_hr)}")
    P = w_hr.shape[-2] if w_hr is not None else H
    expected = {"h0": (*lead, B, P), "w_hh": (*lead, GH, P)}
    given = {"h0": h0, "w_hh": w_hh}
    if cell == "lstm":
        expected["c0"], given["c0"] = (*lead, B, H), c0
    elif c0 is not None:
        raise ValueError(f"c0 must be None for cell {cell!r}")
    if b_hh is not None:
        expected["b_hh"], given["b_hh"] = (*lead, GH), b_hh
    if w_hr is not None:
        expected["w_hr"], given["w_hr"] = (*lead, P, H), w_hr
    for name, shape in expected.items():
        t = given[name]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {_shape(t)}")
        if t.dtype != gx.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but gx has {gx.dtype}; all must match")
        if t.device != gx.device:
            raise RuntimeError(f"{name} is on {t.device} but gx is on {gx.device}; all must be on one device")
    if lengths is not None:
        check_lengths(lengths, T, B, gx.device)


def check_masks(cell, gx, h0, zoneout_h=None, zoneout_c=None, drop_h=None) -> None:
    """The regularisers' masks (fusedrnn/regularisers.py) of a call whose other arguments passed
    check_recurrence_args: shapes (T,B,D*P), (T,B,D*H) LSTM only, h0's shape; a floating dtype;
    gx's device."""
    T, B, DGH = gx.shape
    D, P = directions_of(h0), h0.shape[-1]
    H = DGH // D // GATES[cell]
    if zoneout_c is not None and cell != "lstm":
        raise ValueError("zoneout_c (the cell state's zoneout mask) exists only for the lstm cell")
    for name, t, shape in (("zoneout_h", zoneout_h, (T, B, D * P)), ("zoneout_c", zoneout_c, (T, B, D * H)),
                           ("drop_h", drop_h, tuple(h0.shape))):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {_shape(t)}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
        if t.device != gx.device:
            raise RuntimeError(f"{name} is on {t.device} but gx is on {gx.device}; all must be on one device")


def check_lengths(lengths, T: int, B: int, device: torch.device) -> None:
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"lengths must be a tensor, got {type(lengths).__name__}")
    if lengths.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"lengths must be an int32 or int64 tensor, got {lengths.dtype}")
    if tuple(lengths.shape) != (B,):
        raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
    if lengths.device.type != "cpu" and lengths.device != device:
        raise RuntimeError(f"lengths is on {lengths.device}; it must be on the CPU or on {device}")
    if torch.compiler.is_compiling():
        # reading values would break the graph: check them inside it (RuntimeError when run)
        torch._assert_async(((lengths >= 1) & (lengths <= T)).all(), f"lengths must lie in [1, T={T}]")
        return
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > T:
        raise ValueError(f"lengths must lie in [1, T={T}], got values in [{lo}, {hi}]")


def int32_overflow(T: int, B: int, G: int, H: int, P: int | None = None, D: int = 1) -> str | None:
    """Why a kernel's 32-bit element offsets would overflow for these sizes, or None.

    The largest tensors a kernel indexes are gx / d_gates (T*B*D*G*H elements) and
    w_hh (D*G*H*P); offsets are computed in int32 inside the kernels.
    """
    P = H if P is None else P
    d = "D*" if D > 1 else ""
    for what, n in ((f"T*B*{d}G*H (gx and its gradient)", T * B * D * G * H), (f"{d}G*H*P (w_hh)", D * G * H * P)):
        if n > INT32_MAX:
            return (f"fusedrnn kernels index tensors with 32-bit offsets, but {what} = {n} "
                    f"elements exceeds {INT32_MAX} (T={T}, B={B}, G={G}, H={H})")
    return None


def check_int32_indexing(T: int, B: int, G: int, H: int, P: int | None = None, D: int = 1) -> None:
    """ValueError before launch when a kernel's 32-bit element offsets would overflow (int32_overflow)."""
    why = int32_overflow(T, B, G, H, P, D)
    if why is not None:
        raise ValueError(why + "; split the batch or the sequence, or use backend='reference' or 'torch'")


def _shape(t):
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def active_steps(lengths, T: int, device) -> torch.Tensor | None:
    """(T, B, 1) bool: True where step t belongs to sequence b (t < lengths[b]); None without lengths."""
    if lengths is None:
        return None
    steps = torch.arange(T, device=device).unsqueeze(1)
    return (steps < lengths.to(device).unsqueeze(0)).unsqueeze(2)


def prev_states(y: torch.Tensor, h0: torch.Tensor, lengths, reverse: bool) -> torch.Tensor:
    """The state that entered each step: h_prev (T,B,P) from y (T,B,P) and h0 (B,P), zero at
    padded steps (t >= lengths[b]).

    The weight-gradient GEMM pairs h_prev[t] with d_gates[t], which is zero at a padded
    step; h_prev must be zero there too, or a non-finite state (the last one of a short
    sequence, entering its first padded step) turns 0 * inf into NaN in dW_hh.
    Selected with torch.where, never multiplied by a mask.
    """
    if y.shape[0] == 1:  # one step (decoding, T=1 training): entered from h0 either way, nothing to join
        h_prev = h0.unsqueeze(0)
    elif not reverse:
        h_prev = torch.cat([h0.unsqueeze(0), y[:-1]], dim=0)
    else:
        h_prev = torch.cat([y[1:], h0.unsqueeze(0)], dim=0)
    if lengths is None:
        return h_prev
    T = y.shape[0]
    active = active_steps(lengths, T, y.device)
    if reverse:  # each sequence's first step is lengths[b]-1, entered from h0
        first = torch.arange(T, device=y.device).view(T, 1, 1) == (lengths.to(y.device) - 1).view(1, -1, 1)
        h_prev = torch.where(first, h0.unsqueeze(0), h_prev)
    return torch.where(active, h_prev, torch.zeros((), dtype=h_prev.dtype, device=h_prev.device))


def weight_grads(d_gh: torch.Tensor, h_prev: torch.Tensor, has_bias: bool, dtype: torch.dtype,
                 reset_h_prev: torch.Tensor | None = None):
    """dW_hh = Σ_t d_ghₜᵀ h_{t-1} and db_hh = Σ_t d_ghₜ as two GEMM-sized reductions.
    reset_h_prev (GRU_RESET_BEFORE): r ⊙ h_{t-1}, the operand of the n gate's rows instead."""
    GH, P = d_gh.shape[-1], h_prev.shape[-1]
    d_gh2 = d_gh.reshape(-1, GH)
    if reset_h_prev is None:
        dw = d_gh2.t() @ h_prev.reshape(-1, P).to(d_gh2.dtype)
    else:
        H = GH // 3
        dw = torch.cat([d_gh2[:, :2 * H].t() @ h_prev.reshape(-1, P).to(d_gh2.dtype),
                        d_gh2[:, 2 * H:].t() @ reset_h_prev.reshape(-1, P).to(d_gh2.dtype)])
    db = d_gh2.sum(0).to(dtype) if has_bias else None
    return dw.to(dtype), db


def reset_h_prev(h_prev: torch.Tensor, gx: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None,
                 lengths) -> torch.Tensor:
    """r ⊙ h_{t-1} (T,B,H) fp32 of one direction of a GRU_RESET_BEFORE layer, the operand of
    dW_hn: r recomputed as one GEMM over all steps, r = σ(gx_r + h_{t-1} W_hrᵀ + b_hr), from gx
    (T,B,3H), w_hh (3H,H), b_hh (3H,) or None. Zero at padded steps (selected: gx may hold
    anything there)."""
    H = w_hh.shape[-1]
    h = h_prev.float()
    pre = gx[..., :H].float() + h @ w_hh[:H].float().t()
    if b_hh is not None:
        pre = pre + b_hh[:H].float()
    rh = torch.sigmoid(pre) * h
    active = active_steps(lengths, h.shape[0], h.device)
    return rh if active is None else torch.where(active, rh, torch.zeros((), dtype=rh.dtype, device=rh.device))


def recurrent_weight_grads(d_gh: torch.Tensor, y: torch.Tensor, h0: torch.Tensor, lengths, reverse: bool,
                           has_bias: bool, dtype: torch.dtype, reset_before: tuple | None = None,
                           drop_h: torch.Tensor | None = None):
    """(dW_hh, db_hh) of one layer, shaped like w_hh and b_hh, from the backward's d_gh
    (T,B,D*G*H) and the forward's y (T,B,D*P): per direction d, Σ_t d_gh[t, :, d-block]ᵀ ·
    (the state entering step t of direction d), direction 1 running backward in time.
    reset_before: (gx, w_hh, b_hh) of a GRU_RESET_BEFORE layer, whose n rows pair d_gh with
    r ⊙ h_{t-1} instead (reset_h_prev). drop_h (B,P) or (2,B,P): the recurrent-dropout mask,
    which multiplies the state entering the product (and so its weight gradient's operand)."""
    if h0.dim() == 2:
        h_prev = prev_states(y, h0, lengths, reverse)
        if drop_h is not None:
            h_prev = h_prev * drop_h
        rh = reset_h_prev(h_prev, *reset_before, lengths) if reset_before is not None else None
        return weight_grads(d_gh, h_prev, has_bias, dtype, rh)
    D, B, P = h0.shape
    T, GH = y.shape[0], d_gh.shape[-1] // D
    h_prev = torch.stack([prev_states(y[..., d * P:(d + 1) * P], h0[d], lengths, d == 1) for d in range(D)])
    if drop_h is not None:
        h_prev = h_prev * drop_h.unsqueeze(1)
    d_gh3 = d_gh.reshape(T * B, D, GH).transpose(0, 1)                  # (D, T*B, G*H)
    dw = torch.bmm(d_gh3.transpose(1, 2), h_prev.reshape(D, T * B, P).to(d_gh3.dtype))
    if reset_before is not None:
        gx, w_hh, b_hh = reset_before
        rh = torch.stack([reset_h_prev(h_prev[d], gx[..., d * GH:(d + 1) * GH], w_hh[d],
                                       b_hh[d] if b_hh is not None else None, lengths) for d in range(D)])
        n_rows = torch.bmm(d_gh3[..., 2 * GH // 3:].transpose(1, 2), rh.reshape(D, T * B, P).to(d_gh3.dtype))
        dw = torch.cat([dw[:, :2 * GH // 3], n_rows], dim=1)
    db = d_gh3.sum(1).to(dtype) if has_bias else None
    return dw.to(dtype), db


def reset_before_args(cell: str, gx, w_hh, b_hh) -> dict:
    """The keyword recurrent_weight_grads takes for `cell`: reset_before for GRU_RESET_BEFORE only."""
    return {"reset_before": (gx, w_hh, b_hh)} if cell == GRU_RESET_BEFORE else {}


def per_direction(run_one, cell, gx, h0, c0, w_hh, b_hh, lengths, w_hr, **masks):
    """Both directions of a layer (the D = 2 arguments of the contract) as two D = 1 calls
    `run_one(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr, **direction's masks)`, direction 1
    with reverse=True; returns (y (T,B,2P), hT (2,B,P), cT (2,B,H)) for lstm, (y, hT) otherwise.
    Every argument but gx and lengths is indexed by direction: a stacked tensor or a list; the
    masks (keywords, fusedrnn/regularisers.py) are split as regularisers.direction splits them."""
    GH = gx.shape[2] // 2
    outs = [run_one(cell, gx[..., d * GH:(d + 1) * GH], h0[d], c0[d] if c0 is not None else None, w_hh[d],
                    b_hh[d] if b_hh is not None else None, lengths, d == 1, w_hr[d] if w_hr is not None else None,
                    **regularisers.direction(masks, d, 2))
            for d in range(2)]
    y = torch.cat([o[0] for o in outs], dim=2)
    return (y, *(torch.stack([o[i] for o in outs]) for i in range(1, len(outs[0]))))
