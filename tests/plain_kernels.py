"""A kernel backend written in plain PyTorch, for tests of the kernel-backend path.

It implements the contract of fusedrnn/ops/fused.py genuinely — a forward loop that
returns what its own backward needs, and hand-written backpropagation through time
(no autograd inside) — so the custom ops, torch.compile, DDP, autocast and memory
tests exercise the same path as the Triton and CUDA backends without a GPU.

Dimensions: T steps, B batch, H hidden, G gates. Compute dtype: float32 (float64
for float64 inputs). Saved: lstm (T,B,4H) activations + (T,B,H) cell state entering
each step; gru (T,B,4H) r,z,n and W_hn h + b_hn + (T,B,H) hidden state entering each
step; rnn nothing (its derivative comes from y).
Tests point a backend name at it with
    monkeypatch.setitem(fusedrnn.backends.KERNEL_BACKENDS, "triton", "plain_kernels")
"""
from __future__ import annotations

import torch

from fusedrnn.ops.common import GATES, step_order


def availability(device):
    return None if device.type in ("cpu", "cuda") else f"plain_kernels does not run on {device.type}"


def unsupported(cell, dtype, hidden_size, proj_size):
    return "plain_kernels has no projection (proj_size)" if proj_size else None


def _cd(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def saved_shapes(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
    if not need_grad or cell.startswith("rnn"):
        return []
    T, B, GH = gx.shape
    H = GH // GATES[cell]
    cd = _cd(gx.dtype)
    return [((T, B, 4 * H), cd), ((T, B, H), cd)]


def _active(lengths, T, device):
    if lengths is None:
        return None
    return (torch.arange(T, device=device).unsqueeze(1) < lengths.to(device).unsqueeze(0)).unsqueeze(2)


def forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
    T, B, GH = gx.shape
    H = GH // GATES[cell]
    cd = _cd(gx.dtype)
    w, b = w_hh.to(cd), (b_hh.to(cd) if b_hh is not None else None)
    h = h0.to(cd)
    c = c0.to(cd) if c0 is not None else None
    active = _active(lengths, T, gx.device)
    y = torch.empty(T, B, H, dtype=gx.dtype, device=gx.device)
    keep = need_grad and not cell.startswith("rnn")
    acts = torch.empty(T, B, 4 * H, dtype=cd, device=gx.device) if keep else None
    s_in = torch.empty(T, B, H, dtype=cd, device=gx.device) if keep else None
    for t in step_order(T, reverse):
        g = gx[t].to(cd)
        gh = h @ w.t()
        if b is not None:
            gh = gh + b
        if cell == "lstm":
            i, f, gg, o = (g + gh).chunk(4, dim=1)
            i, f, gg, o = i.sigmoid(), f.sigmoid(), gg.tanh(), o.sigmoid()
            c_new = f * c + i * gg
            h_new = o * c_new.tanh()
            if keep:
                acts[t] = torch.cat([i, f, gg, o], 1)
                s_in[t] = c
        elif cell == "gru":
            x_r, x_z, x_n = g.chunk(3, 1)
            h_r, h_z, h_n = gh.chunk(3, 1)
            r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
            n = (x_n + r * h_n).tanh()
            h_new = (1 - z) * n + z * h
            if keep:
                acts[t] = torch.cat([r, z, n, h_n], 1)
                s_in[t] = h
        else:
            pre = g + gh
            h_new = pre.relu() if cell == "rnn_relu" else pre.tanh()
        if active is None:
            h, y[t] = h_new, h_new
            c = c_new if cell == "lstm" else c
        else:
            m = active[t]
            h = torch.where(m, h_new, h)
            c = torch.where(m, c_new, c) if cell == "lstm" else c
            y[t] = torch.where(m, h_new, torch.zeros_like(h_new))
    saved = (acts, s_in) if keep else ()
    cT = c.to(gx.dtype) if cell == "lstm" else None
    return y, h.to(gx.dtype), cT, saved


def backward(cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y, saved):
    T, B, GH = gx.shape
    H = GH // GATES[cell]
    cd = _cd(gx.dtype)
    w = w_hh.to(cd)
    active = _active(lengths, T, gx.device)
    acts, s_in = saved if saved else (None, None)
    dh = dhT.to(cd)
    dc = dcT.to(cd) if cell == "lstm" else None
    d_gx = torch.empty(T, B, GH, dtype=cd, device=gx.device)
    d_gh = torch.empty(T, B, GH, dtype=cd, device=gx.device) if cell == "gru" else d_gx
    for t in reversed(step_order(T, reverse)):
        dht = dh + dy[t].to(cd)
        if cell == "lstm":
            i, f, g, o = acts[t].chunk(4, 1)
            tc = (f * s_in[t] + i * g).tanh()
            dct = dc + dht * o * (1 - tc * tc)
            dgates = torch.cat([dct * g * i * (1 - i), dct * s_in[t] * f * (1 - f),
                                dct * i * (1 - g * g), dht * tc * o * (1 - o)], 1)
            dgh = dgates
            dh_new, dc_new = dgates @ w, dct * f
        elif cell == "gru":
            r, z, n, h_n = acts[t].chunk(4, 1)
            dn = dht * (1 - z) * (1 - n * n)
            dr = dn * h_n * r * (1 - r)
            dz = dht * (s_in[t] - n) * z * (1 - z)
            dgates = torch.cat([dr, dz, dn], 1)
            dgh = torch.cat([dr, dz, dn * r], 1)
            dh_new = dht * z + dgh @ w
        else:
            yt = y[t].to(cd)
            # relu' as torch computes it: 0 where y <= 0, else 1 (NaN included)
            dgates = dht * ((yt <= 0).logical_not().to(cd) if cell == "rnn_relu" else 1 - yt * yt)
            dgh = dgates
            dh_new = dgates @ w
        if active is not None:
            m = active[t]
            dgates, dgh = torch.where(m, dgates, 0.0), torch.where(m, dgh, 0.0)
            dh_new = torch.where(m, dh_new, dh)
            dc_new = torch.where(m, dc_new, dc) if cell == "lstm" else None
        d_gx[t] = dgates
        if cell == "gru":
            d_gh[t] = dgh
        dh = dh_new
        dc = dc_new if cell == "lstm" else None
    dc0 = dc.to(c0.dtype) if cell == "lstm" else None
    return d_gx.to(gx.dtype), d_gh, dh.to(h0.dtype), dc0


def install(monkeypatch) -> str:
    """Point the "triton" backend name at this module for one test; returns the name to use."""
    import torch._dynamo  # noqa: PLC0415
    import fusedrnn  # noqa: PLC0415
    monkeypatch.setitem(fusedrnn.backends.KERNEL_BACKENDS, "triton", __name__)
    torch._dynamo.reset()  # compiled graphs bake the backend in; start clean
    return "triton"
