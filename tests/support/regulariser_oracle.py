"""A float64 oracle for zoneout and recurrent dropout, written from the formulas (not from
fusedrnn's reference backend), and the masks drawn the way fusedrnn/regularisers.py documents.

    h̃_t, c̃_t = cell(x_t, m_d ⊙ h_{t-1}, c_{t-1})     m_d: recurrent dropout, one per sequence
    h_t = z_t ⊙ h_{t-1} + (1 − z_t) ⊙ h̃_t            (GRU: its blend takes the unmasked h_{t-1})
    c_t = zc_t ⊙ c_{t-1} + (1 − zc_t) ⊙ c̃_t           (LSTM; h̃_t = o ⊙ tanh(c̃_t))

Each sequence runs on its own up to its length (a packed batch's finished sequence keeps its state).
`bug` plants a plausible mistake, so a test can show the comparison would catch it.
"""
from __future__ import annotations

import torch

CELL_OF_MODE = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}


def draw_masks(regs: dict, training: bool, T: int, B: int, D: int, P: int, H: int, lstm: bool):
    """One layer's (zoneout_h (T,B,D,P), zoneout_c (T,B,D,H), drop (D,B,P)), drawn in the documented
    order from the default generator (training) or the expectation (eval); None where off."""
    pz, pc, pd = regs.get("zoneout", 0.0), regs.get("zoneout_cell", 0.0), regs.get("recurrent_dropout", 0.0)
    drop = zh = zc = None
    if training and pd:
        drop = (torch.rand(D, B, P) >= pd).double() / (1 - pd)
    if pz:
        zh = (torch.rand(T, B, D, P) < pz).double() if training else torch.full((T, B, D, P), pz, dtype=torch.float64)
    if pc and lstm:
        zc = (torch.rand(T, B, D, H) < pc).double() if training else torch.full((T, B, D, H), pc, dtype=torch.float64)
    return zh, zc, drop


def cell_step(cell, gx_t, h, c, w_hh, b_hh, w_hr, drop, bug=None):
    """(h̃, c̃) of one step in float64; drop (B,P) or None."""
    hp = h if drop is None or bug == "drop_after_product" else h * drop
    G = {"lstm": 4, "rnn_tanh": 1, "rnn_relu": 1}.get(cell, 3)
    H = w_hh.shape[0] // G
    b = b_hh if b_hh is not None else torch.zeros(G * H, dtype=gx_t.dtype)
    if cell == "lstm":
        pre = gx_t + hp @ w_hh.T + b
        i, f, g, o = pre.split(H, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return (h_new @ w_hr.T if w_hr is not None else h_new), c_new
    if cell.startswith("rnn"):
        pre = gx_t + hp @ w_hh.T + b
        if bug == "drop_after_product" and drop is not None:  # the mask on the product, not on h (G = 1)
            pre = gx_t + (h @ w_hh.T + b) * drop
        return (torch.relu(pre) if cell == "rnn_relu" else torch.tanh(pre)), None
    w_r, w_z, w_n = w_hh.split(H)
    b_r, b_z, b_n = b.split(H)
    x_r, x_z, x_n = gx_t.split(H, dim=1)
    r = torch.sigmoid(x_r + hp @ w_r.T + b_r)
    z = torch.sigmoid(x_z + hp @ w_z.T + b_z)
    n = torch.tanh(x_n + r * (hp @ w_n.T + b_n)) if cell == "gru" else torch.tanh(x_n + (r * hp) @ w_n.T + b_n)
    blend_h = hp if bug == "drop_in_blend" else h
    return (1 - z) * n + z * blend_h, None


def layer(cell, gx, h0, c0, w_hh, b_hh, w_hr, lengths, reverse, zh, zc, drop, bug=None):
    """One direction; zh (T,B,P), zc (T,B,H), drop (B,P) or None (batch order of gx).
    Returns y (T,B,P) zero past each end, hT (B,P), cT (B,H) or None."""
    T, B = gx.shape[:2]
    ys, hs, cs = torch.zeros(T, B, h0.shape[1], dtype=gx.dtype), [], []
    for b in range(B):
        L = T if lengths is None else int(lengths[b])
        h, c = h0[b:b + 1], (c0[b:b + 1] if c0 is not None else None)
        for t in (range(L - 1, -1, -1) if reverse else range(L)):
            hn, cn = cell_step(cell, gx[t, b:b + 1], h, c, w_hh, b_hh, w_hr,
                               drop[b:b + 1] if drop is not None else None, bug)
            if zh is not None:
                src = h * drop[b:b + 1] if bug == "zoneout_from_masked_h" and drop is not None else h
                hn = zh[t, b:b + 1] * src + (1 - zh[t, b:b + 1]) * hn
            if zc is not None:
                cn = zc[t, b:b + 1] * c + (1 - zc[t, b:b + 1]) * cn
            h, c = hn, cn
            ys = ys.index_put((torch.tensor([t]), torch.tensor([b])), h)
        hs.append(h)
        cs.append(c)
    return ys, torch.cat(hs), (torch.cat(cs) if c0 is not None else None)


def module(m, x, h0, c0, regs: dict, training: bool, lengths=None, order=None, bug=None):
    """A fusedrnn module's (y (T,B,D*P), h_n, c_n or None) from its parameters in float64: x (T,B,I)
    time-major in the caller's batch order. `order` (B,): the batch order the module's recurrence
    sees (a PackedSequence's sorted_indices), which is the order its masks are drawn in."""
    cell = CELL_OF_MODE[m.mode]
    if cell == "gru" and not m.reset_after:
        cell = "gru_reset_before"
    D = 2 if m.bidirectional else 1
    T, B = x.shape[:2]
    H = m.hidden_size
    P = m.proj_size or H
    where = torch.argsort(order) if order is not None else torch.arange(B)  # caller's b -> mask row
    inp, h_n, c_n = x, [], []
    for lay in range(m.num_layers):
        zh, zc, drop = draw_masks(regs, training, T, B, D, P, H, cell == "lstm")
        outs = []
        for d in range(D):
            sfx = f"_l{lay}" + ("_reverse" if d else "")
            p = lambda name: getattr(m, name + sfx, None)  # noqa: E731
            gx = inp @ p("weight_ih").T + (p("bias_ih") if m.bias else 0.0)
            k = lay * D + d
            y, hT, cT = layer(cell, gx, h0[k], c0[k] if c0 is not None else None, p("weight_hh"),
                              p("bias_hh") if m.bias else None, p("weight_hr"), lengths, d == 1,
                              zh[:, where, d] if zh is not None else None, zc[:, where, d] if zc is not None else None,
                              drop[d][where] if drop is not None else None, bug)
            outs.append(y)
            h_n.append(hT)
            c_n.append(cT)
        inp = torch.cat(outs, dim=2)
    return inp, torch.stack(h_n), (torch.stack(c_n) if cell == "lstm" else None)
