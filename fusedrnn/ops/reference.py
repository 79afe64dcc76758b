"""Plain-PyTorch recurrence: the oracle every fused kernel is checked against.

Dimensions: T time steps, B batch, H hidden units, P projection size (LSTM with
proj_size, else P == H), G gates (LSTM 4: i,f,g,o · GRU 3: r,z,n · RNN 1). The GRU comes in
torch.nn's form ("gru") and with the reset gate before the recurrent product (GRU_RESET_BEFORE).

It implements the kernel contract of docs/design.md with ordinary autograd: the state
is carried in float32 (float64 when the inputs are float64) and every output is
stored in the input dtype. Complex inputs, which torch.nn's modules and cells accept,
are computed in complex (complex128 for complex128, else complex64). Both directions of a layer (D = 2, h0 (2,B,P)) run one
after the other, each as its own one-direction loop.
"""
from __future__ import annotations

import torch

from .common import GRU_RESET_BEFORE, active_steps, per_direction, step_order


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype in (torch.float64, torch.complex128):
        return dtype
    # a complex input cast to a real dtype would lose its imaginary part
    return torch.complex64 if dtype.is_complex else torch.float32


def lstm_step(gx_t, h, c, w_hh, b_hh, w_hr=None):
    """One LSTM step: (h̃, c̃). gx_t (B,4H) already holds x W_ihᵀ + b_ih; h (B,P) is what enters
    the product (h_{t-1}, times the recurrent-dropout mask where there is one)."""
    gates = gx_t + h @ w_hh.t()
    if b_hh is not None:
        gates = gates + b_hh
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    if w_hr is not None:
        h_new = h_new @ w_hr.t()
    return h_new, c_new


def gru_step(gx_t, h, w_hh, b_hh, reset_after: bool = True, h_prod=None):
    """One GRU step. reset_after (torch.nn.GRU): n = tanh(x_n + r * (W_hn h + b_hn));
    else the reset gate comes before the product: n = tanh(x_n + W_hn (r * h) + b_hn).
    h_prod: the h entering the products (recurrent dropout), h itself by default; the
    blend (1 - z) n + z h always takes the unmasked h."""
    H = h.shape[1]
    hp = h if h_prod is None else h_prod
    w_rz, w_n = w_hh[:2 * H], w_hh[2 * H:]
    gh = hp @ (w_hh if reset_after else w_rz).t()
    if b_hh is not None:
        gh = gh + (b_hh if reset_after else b_hh[:2 * H])
    x_r, x_z, x_n = gx_t.chunk(3, dim=1)
    r = torch.sigmoid(x_r + gh[:, :H])
    z = torch.sigmoid(x_z + gh[:, H:2 * H])
    if reset_after:
        n = torch.tanh(x_n + r * gh[:, 2 * H:])
    else:
        h_n = (r * hp) @ w_n.t()
        n = torch.tanh(x_n + (h_n + b_hh[2 * H:] if b_hh is not None else h_n))
    return (1 - z) * n + z * h


def rnn_step(gx_t, h, w_hh, b_hh, relu: bool):
    pre = gx_t + h @ w_hh.t()
    if b_hh is not None:
        pre = pre + b_hh
    return torch.relu(pre) if relu else torch.tanh(pre)


def recurrence(cell, gx, h0, c0, w_hh, b_hh, lengths=None, reverse=False, w_hr=None,
               zoneout_h=None, zoneout_c=None, drop_h=None):
    """Reference for `fusedrnn.ops.recurrence`; returns (y, hT, cT) or (y, hT).

    gx (T,B,G*H) · h0 (B,P) · c0 (B,H) LSTM only · w_hh (G*H,P) · b_hh (G*H,) or None
    lengths (B,) or None · w_hr (P,H) LSTM projection or None. Two directions: h0 (2,B,P)
    and every other argument stacked the same way (gx (T,B,2*G*H)), y (T,B,2P).
    Masks (fusedrnn/regularisers.py; None: off): zoneout_h (T,B,P) and zoneout_c (T,B,H)
    blend h_t = m h_{t-1} + (1 - m) h̃_t (c likewise) after the cell; drop_h (B,P) multiplies
    h_{t-1} where it enters the recurrent product. Two directions: (T,B,2P), (T,B,2H), (2,B,P).
    """
    masks = {k: v for k, v in (("zoneout_h", zoneout_h), ("zoneout_c", zoneout_c), ("drop_h", drop_h))
             if v is not None}
    if h0.dim() == 3:
        return per_direction(recurrence, cell, gx, h0, c0, w_hh, b_hh, lengths, w_hr, **masks)
    out_dtype = gx.dtype
    cd = _compute_dtype(out_dtype)
    T = gx.shape[0]
    gx = gx.to(cd)
    h = h0.to(cd)
    c = c0.to(cd) if c0 is not None else None
    w_hh = w_hh.to(cd)
    b_hh = b_hh.to(cd) if b_hh is not None else None
    w_hr = w_hr.to(cd) if w_hr is not None else None
    zh, zc, dh = (m.to(cd) if m is not None else None for m in (zoneout_h, zoneout_c, drop_h))
    active = active_steps(lengths, T, gx.device)  # (T, B, 1) or None
    zero = torch.zeros((), dtype=cd, device=gx.device)

    ys = [None] * T
    for t in step_order(T, reverse):
        gx_t, h_in, c_in = gx[t], h, c
        if active is not None:
            # a padded row computes on zeros, and only torch.where (a select) links it to the
            # real state and gx: its zero gradient is never multiplied by a NaN or inf from
            # the padded step's gx or the carried state (0 * inf would be NaN in backward)
            m = active[t]
            gx_t, h_in = torch.where(m, gx_t, zero), torch.where(m, h, zero)
            c_in = torch.where(m, c, zero) if cell == "lstm" else None
        h_prod = h_in if dh is None else h_in * dh
        if cell == "lstm":
            h_new, c_new = lstm_step(gx_t, h_prod, c_in, w_hh, b_hh, w_hr)
        elif cell in ("gru", GRU_RESET_BEFORE):
            h_new = gru_step(gx_t, h_in, w_hh, b_hh, reset_after=(cell == "gru"), h_prod=h_prod)
        else:
            h_new = rnn_step(gx_t, h_prod, w_hh, b_hh, relu=(cell == "rnn_relu"))
        if zh is not None:  # zoneout: after the cell, from the unmasked previous state
            h_new = zh[t] * h_in + (1 - zh[t]) * h_new
        if zc is not None:
            c_new = zc[t] * c_in + (1 - zc[t]) * c_new
        if active is None:
            h = h_new
            if cell == "lstm":
                c = c_new
            ys[t] = h_new
        else:
            h = torch.where(m, h_new, h)
            if cell == "lstm":
                c = torch.where(m, c_new, c)
            ys[t] = torch.where(m, h_new, zero)
    y = torch.stack(ys).to(out_dtype)
    # copies: hT may be a tensor autograd saved (relu saves its output), and the caller may
    # modify what it gets in place
    if cell == "lstm":
        return y, h.to(out_dtype, copy=True), c.to(out_dtype, copy=True)
    return y, h.to(out_dtype, copy=True)
