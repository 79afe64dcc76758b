"""A kernel backend written in plain PyTorch, for tests of the kernel-backend path.

It implements contract v2 (docs/design.md) genuinely — LSTM projections, both
directions of a layer in one call (one step loop advancing both, batched matmuls over
the direction axis), a forward that returns what its own backward needs, and
hand-written backpropagation through time (no autograd inside) — so the custom ops,
the functional layer, torch.compile, DDP, autocast and memory tests exercise the same
path as the Triton and CUDA backends without a GPU.

Dimensions: T steps, B batch, H hidden, P = proj_size or H, G gates, D directions.
Compute dtype: float32 (float64 for float64 inputs). Internally every tensor carries a
leading direction axis (D = 1 for a one-direction call). Saved (lead = (D,) for D = 2,
() for D = 1): lstm (*lead,T,B,4H) i,f,g,o + (*lead,T,B,H) cell state entering each
step; gru (*lead,T,B,4H) r,z,n and W_hn h + b_hn + (*lead,T,B,H) hidden state entering
each step; rnn nothing (its derivative comes from y), or h̃ (*lead,T,B,H) with zoneout.

The regularisers' masks (fusedrnn/regularisers.py) are taken too: drop_h multiplies the state
entering W_hh h, and zoneout blends h_t = z h_{t-1} + (1 − z) h̃_t (c likewise) after the cell.

Importing it registers it with the custom ops (`fusedrnn.ops.library.register_kernels`), which
run no other module. Tests point a backend name at it with `install(monkeypatch)`; `install(monkeypatch,
directions=1)` or `install(monkeypatch, projections=False)` make it declare less (the frontend's
fallbacks), and it then refuses any call that its `unsupported` declined.
"""
from __future__ import annotations

import sys

import torch

from fusedrnn.ops import library
from fusedrnn.ops.common import GATES, TORCH_CELLS

# the custom ops run only registered kernel backends (see fusedrnn/ops/library.py)
library.register_kernels(__name__)

#: what `unsupported` declares; install() changes it for one test
DECLARED = {"directions": 2, "projections": True}


def availability(device):
    return None if device.type in ("cpu", "cuda") else f"plain_kernels does not run on {device.type}"


def unsupported(cell, dtype, hidden_size, proj_size, directions=1, regularised=False):
    if cell not in TORCH_CELLS:
        return f"plain_kernels computes torch.nn's cells only, not {cell}"
    if dtype is not None and dtype.is_complex:  # as the Triton and CUDA kernels, real dtypes only
        return f"plain_kernels computes real floating dtypes only, not {dtype}"
    if proj_size and not DECLARED["projections"]:
        return "plain_kernels (as installed) has no projection (proj_size)"
    if directions > DECLARED["directions"]:
        return "plain_kernels (as installed) runs one direction per call"
    return None


def _cd(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _dims(cell, gx, h0):
    """(T, B, D, H, G*H) of a call."""
    D = h0.shape[0] if h0.dim() == 3 else 1
    T, B, DGH = gx.shape
    return T, B, D, DGH // D // GATES[cell], DGH // D


def _with_direction_axis(t, stacked):
    """t with a leading direction axis: as given for D = 2, unsqueezed for D = 1."""
    return t if t is None or stacked else t.unsqueeze(0)


def _step_times(T, D, reverse):
    """For each loop step s, the time index each direction processes."""
    revs = (reverse,) if D == 1 else (False, True)
    return [[T - 1 - s if r else s for r in revs] for s in range(T)]


def _per_direction(src, ts):
    """Stack src[d][t_d] over directions: src is indexed [d][t] (a (D,T,...) tensor)."""
    return torch.stack([src[d][t] for d, t in enumerate(ts)])


def _fresh(t, stacked, dtype):
    """t without the direction axis it got for D = 1, in `dtype`: a tensor of its own, not a view."""
    return (t if stacked else t[0]).to(dtype, copy=True)


def _check_declared(h0, w_hr):
    if h0.dim() == 3 and DECLARED["directions"] < 2:
        raise AssertionError("plain_kernels got two directions in one call after declaring one per call")
    if w_hr is not None and not DECLARED["projections"]:
        raise AssertionError("plain_kernels got a projection after declaring none")


def saved_shapes(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr=None, zoneout_h=None,
                 zoneout_c=None, drop_h=None):
    if not need_grad or (cell.startswith("rnn") and zoneout_h is None):
        return []
    T, B, D, H, _ = _dims(cell, gx, h0)
    lead = (D,) if h0.dim() == 3 else ()
    cd = _cd(gx.dtype)
    if cell.startswith("rnn"):  # h̃, which y no longer is under zoneout
        return [((*lead, T, B, H), cd)]
    return [((*lead, T, B, 4 * H), cd), ((*lead, T, B, H), cd)]


def _masks(T, B, D, zoneout_h, zoneout_c, drop_h, stacked, cd):
    """(zh (D,T,B,P), zc (D,T,B,H), dm (D,B,P)), None where absent."""
    def split(z):
        return None if z is None else z.to(cd).view(T, B, D, -1).permute(2, 0, 1, 3)
    dm = _with_direction_axis(drop_h, stacked)
    return split(zoneout_h), split(zoneout_c), (dm.to(cd) if dm is not None else None)


def _active(lengths, T, device):
    if lengths is None:
        return None
    return (torch.arange(T, device=device).unsqueeze(1) < lengths.to(device).unsqueeze(0)).unsqueeze(2)


def forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr=None, zoneout_h=None, zoneout_c=None,
            drop_h=None):
    _check_declared(h0, w_hr)
    T, B, D, H, GH = _dims(cell, gx, h0)
    stacked = h0.dim() == 3
    up = lambda t: _with_direction_axis(t, stacked)  # noqa: E731
    cd = _cd(gx.dtype)
    zh, zc, dm = _masks(T, B, D, zoneout_h, zoneout_c, drop_h, stacked, cd)
    w = up(w_hh).to(cd).transpose(1, 2)                                  # (D, P, G*H)
    b = up(b_hh).to(cd).unsqueeze(1) if b_hh is not None else None       # (D, 1, G*H)
    wr = up(w_hr).to(cd).transpose(1, 2) if w_hr is not None else None   # (D, H, P)
    h = up(h0).to(cd)                                                    # (D, B, P)
    c = up(c0).to(cd) if c0 is not None else None                        # (D, B, H)
    P = h.shape[-1]
    gxd = gx.view(T, B, D, GH).permute(2, 0, 1, 3)                       # (D, T, B, G*H)
    active = _active(lengths, T, gx.device)
    y = torch.zeros(T, B, D * P, dtype=gx.dtype, device=gx.device)
    yd = y.view(T, B, D, P)
    keep = need_grad and not cell.startswith("rnn")
    keep_tilde = need_grad and cell.startswith("rnn") and zh is not None
    lead = (D,) if stacked else ()
    acts = torch.empty(*lead, T, B, 4 * H, dtype=cd, device=gx.device) if keep else None
    s_in = torch.empty(*lead, T, B, H, dtype=cd, device=gx.device) if keep else None
    tilde = torch.empty(*lead, T, B, H, dtype=cd, device=gx.device) if keep_tilde else None
    acts_d, s_in_d, tilde_d = up(acts), up(s_in), up(tilde)
    for ts in _step_times(T, D, reverse):
        g = _per_direction(gxd, ts).to(cd)                               # (D, B, G*H)
        gh = torch.bmm(h if dm is None else h * dm, w)
        if b is not None:
            gh = gh + b
        if cell == "lstm":
            i, f, gg, o = (g + gh).chunk(4, dim=2)
            i, f, gg, o = i.sigmoid(), f.sigmoid(), gg.tanh(), o.sigmoid()
            c_new = f * c + i * gg
            h_new = o * c_new.tanh()                                     # m, H wide
            if wr is not None:
                h_new = torch.bmm(h_new, wr)                             # P wide
            saves = (torch.cat([i, f, gg, o], 2), c)
        elif cell == "gru":
            x_r, x_z, x_n = g.chunk(3, 2)
            h_r, h_z, h_n = gh.chunk(3, 2)
            r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
            n = (x_n + r * h_n).tanh()
            h_new = (1 - z) * n + z * h
            saves = (torch.cat([r, z, n, h_n], 2), h)
        else:
            pre = g + gh
            h_new = pre.relu() if cell == "rnn_relu" else pre.tanh()
            if keep_tilde:
                for d, t in enumerate(ts):
                    tilde_d[d, t] = h_new[d]
        if zh is not None:  # zoneout, from the unmasked previous state
            z = _per_direction(zh, ts)
            h_new = z * h + (1 - z) * h_new
        if zc is not None:
            z = _per_direction(zc, ts)
            c_new = z * c + (1 - z) * c_new
        if keep:
            for d, t in enumerate(ts):
                acts_d[d, t], s_in_d[d, t] = saves[0][d], saves[1][d]
        if active is None:
            h = h_new
            c = c_new if cell == "lstm" else c
            out = h_new
        else:
            m = _per_direction([active] * D, ts)                         # (D, B, 1)
            h = torch.where(m, h_new, h)
            c = torch.where(m, c_new, c) if cell == "lstm" else c
            out = torch.where(m, h_new, torch.zeros_like(h_new))
        for d, t in enumerate(ts):
            yd[t, :, d] = out[d]
    saved = (acts, s_in) if keep else (tilde,) if keep_tilde else ()
    cT = _fresh(c, stacked, gx.dtype) if cell == "lstm" else None
    return y, _fresh(h, stacked, gx.dtype), cT, saved


def backward(cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y, saved, w_hr=None, zoneout_h=None,
             zoneout_c=None, drop_h=None):
    _check_declared(h0, w_hr)
    T, B, D, H, GH = _dims(cell, gx, h0)
    stacked = h0.dim() == 3
    up = lambda t: _with_direction_axis(t, stacked)  # noqa: E731
    cd = _cd(gx.dtype)
    zh, zc, dm_mask = _masks(T, B, D, zoneout_h, zoneout_c, drop_h, stacked, cd)
    w = up(w_hh).to(cd)                                                  # (D, G*H, P)
    wr = up(w_hr).to(cd) if w_hr is not None else None                   # (D, P, H)
    active = _active(lengths, T, gx.device)
    acts, s_in = (up(saved[0]), up(saved[1])) if len(saved) == 2 else (None, None)
    tilde = up(saved[0]) if len(saved) == 1 else None
    dh = up(dhT).to(cd)                                                  # (D, B, P)
    dc = up(dcT).to(cd) if cell == "lstm" else None                      # (D, B, H)
    P = dh.shape[-1]
    dyd = dy.view(T, B, D, P).permute(2, 0, 1, 3)                        # (D, T, B, P)
    yd = y.view(T, B, D, P).permute(2, 0, 1, 3)
    d_gx = torch.empty(T, B, D * GH, dtype=cd, device=gx.device)
    d_gh = torch.empty(T, B, D * GH, dtype=cd, device=gx.device) if cell == "gru" else d_gx
    d_gxd, d_ghd = d_gx.view(T, B, D, GH), d_gh.view(T, B, D, GH)
    dwr = torch.zeros_like(wr) if wr is not None else None
    for ts in reversed(_step_times(T, D, reverse)):
        dh_total = dh + _per_direction(dyd, ts).to(cd)
        m = _per_direction([active] * D, ts) if active is not None else None
        # zoneout: h_t = z h_{t-1} + (1 - z) h̃_t, so h̃_t gets (1 - z) of the gradient, h_{t-1} the rest
        zt = _per_direction(zh, ts) if zh is not None else None
        dht = dh_total if zt is None else (1 - zt) * dh_total
        dc_in = dc
        if zc is not None and cell == "lstm":
            dc_in = (1 - _per_direction(zc, ts)) * dc
        if cell == "lstm":
            i, f, g, o = _per_direction(acts, ts).chunk(4, 2)
            c_in = _per_direction(s_in, ts)
            tc = (f * c_in + i * g).tanh()
            dm = dht
            if wr is not None:  # h = m W_hrᵀ: dm = dh W_hr, dW_hr += dhᵀ m over the active rows
                dm = torch.bmm(dht, wr)
                sel = (lambda t: t) if m is None else (lambda t: torch.where(m, t, 0.0))  # noqa: E731
                dwr += torch.bmm(sel(dht).transpose(1, 2), sel(o * tc))
            dct = dc_in + dm * o * (1 - tc * tc)
            dgates = torch.cat([dct * g * i * (1 - i), dct * c_in * f * (1 - f),
                                dct * i * (1 - g * g), dm * tc * o * (1 - o)], 2)
            dgh = dgates
            dh_new, dc_new = _masked(torch.bmm(dgates, w), dm_mask), dct * f
            if zc is not None:
                dc_new = dc_new + _per_direction(zc, ts) * dc
        elif cell == "gru":
            r, z, n, h_n = _per_direction(acts, ts).chunk(4, 2)
            dn = dht * (1 - z) * (1 - n * n)
            dr = dn * h_n * r * (1 - r)
            dz = dht * (_per_direction(s_in, ts) - n) * z * (1 - z)
            dgates = torch.cat([dr, dz, dn], 2)
            dgh = torch.cat([dr, dz, dn * r], 2)
            dh_new = dht * z + _masked(torch.bmm(dgh, w), dm_mask)
        else:
            yt = _per_direction(tilde if tilde is not None else yd, ts).to(cd)
            # relu' as torch computes it: 0 where y <= 0, else 1 (NaN included)
            dgates = dht * ((yt <= 0).logical_not().to(cd) if cell == "rnn_relu" else 1 - yt * yt)
            dgh = dgates
            dh_new = _masked(torch.bmm(dgates, w), dm_mask)
        if zt is not None:
            dh_new = dh_new + zt * dh_total
        if m is not None:
            dgates, dgh = torch.where(m, dgates, 0.0), torch.where(m, dgh, 0.0)
            dh_new = torch.where(m, dh_new, dh)
            dc_new = torch.where(m, dc_new, dc) if cell == "lstm" else None
        for d, t in enumerate(ts):
            d_gxd[t, :, d] = dgates[d]
            if cell == "gru":
                d_ghd[t, :, d] = dgh[d]
        dh = dh_new
        dc = dc_new if cell == "lstm" else None
    dc0 = _fresh(dc, stacked, c0.dtype) if cell == "lstm" else None
    grads = (d_gx.to(gx.dtype), d_gh, _fresh(dh, stacked, h0.dtype), dc0)
    return grads if w_hr is None else (*grads, _fresh(dwr, stacked, w_hr.dtype))


def _masked(dh, mask):
    """The gradient reaching h_{t-1} through W_hh h: times the recurrent-dropout mask, if any."""
    return dh if mask is None else dh * mask


def install_step(monkeypatch) -> list:
    """Give this module a fused step(...) (the input GEMM, then one forward step) for one test;
    returns the list of cells it was called for."""
    stepped = []

    def step(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        stepped.append(cell)
        gx = torch.nn.functional.linear(x, w_ih, b_ih).unsqueeze(0)
        _, hT, cT, _ = sys.modules[__name__].forward(cell, gx, h0, c0, w_hh, b_hh, None, False, False)
        return hT, cT
    monkeypatch.setattr(sys.modules[__name__], "step", step, raising=False)
    return stepped


def install(monkeypatch, *, directions: int = 2, projections: bool = True) -> str:
    """Point the "triton" backend name at this module for one test; returns the name to use.

    directions=1: declare one direction per call; projections=False: declare none."""
    import torch._dynamo  # noqa: PLC0415
    import fusedrnn  # noqa: PLC0415
    monkeypatch.setitem(fusedrnn.backends.KERNEL_BACKENDS, "triton", __name__)
    monkeypatch.setitem(DECLARED, "directions", directions)
    monkeypatch.setitem(DECLARED, "projections", projections)
    torch._dynamo.reset()  # compiled graphs bake the backend in; start clean
    return "triton"
