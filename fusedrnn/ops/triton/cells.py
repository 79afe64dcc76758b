"""The cells' pointwise math, forward and backward, as small `@triton.jit` functions:
the Triton twin of csrc/cells/. The recurrence kernels (kernels.py) are written once
and call `cell_fwd` / `cell_bwd` with the cell as a constexpr; adding a cell means
adding its two functions here and a row in CELLS.

Every argument is an fp32 tile of one shape (any shape; the kernels use (BLOCK_N, BLOCK_B)).
Gate slots follow torch.nn's order: LSTM i,f,g,o · GRU r,z,n · RNN one.

Forward, per cell: x_g = gx gate g (x W_ihᵀ + b_ih), a_g = gate g of h W_hhᵀ + b_hh,
h / c the state entering the step. It returns the new state and the four values the
backward needs (`s0..s3`, stored with SAVE):
    LSTM  s = σi, σf, tanh g, σo          c_new = σf c + σi tanh g, h_new = σo tanh c_new
    GRU   s = r, z, n, a_n (= W_hn h + b_hn)  n = tanh(x_n + r a_n), h_new = (1-z) n + z h
    GRU_RB (reset before)  s = r, z, n, a_n    n = tanh(x_n + a_n), where the kernel's second product
          gave a_n = W_hn (r h) + b_hn (reset_state, with_slot2)
    RNN   s0 = h_new                          h_new = tanh(x + a) or relu(x + a)
Backward, per cell: `dh` is the full gradient of h_new (from y and from the next step),
`dc` that of c_new; `st` the saved state entering the step (LSTM c, GRU h). It returns
the pre-activation gradients fed by gx (d0..d3), the one of gate 2 fed by h W_hhᵀ (GRU
r·d_n, else d2), the part of dh_prev that bypasses W_hh, and dc_prev. GRU_RB's d_r needs
W_hnᵀ d_n over all units first: cell_bwd leaves it 0 and the kernel completes it (reset_grad).
"""
import triton
import triton.language as tl

from ...cell_table import CELLS as TABLE

#: the CELL constexpr of the kernels, and per constant the gates G, the fp32 values per unit saved
#: per step and whether the state entering each step is saved too (fusedrnn/cell_table.py)
LSTM, GRU, RNN_TANH, RNN_RELU, GRU_RB = (TABLE[name].cell_id
                                         for name in ("lstm", "gru", "rnn_tanh", "rnn_relu", "gru_reset_before"))
CELLS = {name: c.cell_id for name, c in TABLE.items()}
GATES = {c.cell_id: c.gates for c in TABLE.values()}
SAVED_SLOTS = {c.cell_id: c.triton_saved_slots for c in TABLE.values()}
SAVES_STATE = {c.cell_id: c.triton_saves_state for c in TABLE.values()}


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # exp of a non-positive argument never overflows; the abs error stays ~1 ulp
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def relu(x):
    return tl.where(x < 0.0, 0.0, x)  # NaN < 0 is false: NaN passes through, as in torch.relu


@triton.jit
def lstm_fwd(x0, x1, x2, x3, a0, a1, a2, a3, c):
    i = sigmoid(x0 + a0)
    f = sigmoid(x1 + a1)
    g = tanh(x2 + a2)
    o = sigmoid(x3 + a3)
    c_new = f * c + i * g
    return o * tanh(c_new), c_new, i, f, g, o


@triton.jit
def lstm_bwd(dh, dc, i, f, g, o, c):
    tc = tanh(f * c + i * g)
    dct = dc + dh * o * (1.0 - tc * tc)
    d_g = dct * i * (1.0 - g * g)
    return dct * g * i * (1.0 - i), dct * c * f * (1.0 - f), d_g, dh * tc * o * (1.0 - o), d_g, tl.zeros_like(dh), dct * f


@triton.jit
def gru_fwd(x0, x1, x2, a0, a1, a2, h):
    r = sigmoid(x0 + a0)
    z = sigmoid(x1 + a1)
    n = tanh(x2 + r * a2)
    return (1.0 - z) * n + z * h, r, z, n


@triton.jit
def gru_bwd(dh, r, z, n, a_n, h):
    d_n = dh * (1.0 - z) * (1.0 - n * n)
    return d_n * a_n * r * (1.0 - r), dh * (h - n) * z * (1.0 - z), d_n, r * d_n, dh * z


@triton.jit
def gru_rb_fwd(x0, x1, x2, a0, a1, a2, h):
    r = sigmoid(x0 + a0)
    z = sigmoid(x1 + a1)
    n = tanh(x2 + a2)
    return (1.0 - z) * n + z * h, r, z, n


@triton.jit
def gru_rb_bwd(dh, z, n, h):
    """-> d_z, d_n, dh_direct; d_r follows from W_hnᵀ d_n (reset_grad)."""
    d_n = dh * (1.0 - z) * (1.0 - n * n)
    return dh * (h - n) * z * (1.0 - z), d_n, dh * z


@triton.jit
def reset_grad(g, r, h):
    """GRU_RB: from g = W_hnᵀ d_n, the gradient of r ⊙ h_prev, -> (d_r pre-activation, the
    part of dh_prev that passes through r ⊙ h_prev)."""
    return g * h * r * (1.0 - r), g * r


@triton.jit
def rnn_bwd(dh, h_new, RELU: tl.constexpr):
    if RELU:  # torch's threshold_backward: zero where h <= 0, so a NaN h passes the gradient
        d = tl.where(h_new <= 0.0, 0.0, dh)
    else:
        d = dh * (1.0 - h_new * h_new)
    return d


@triton.jit
def cell_fwd(CELL: tl.constexpr, x0, x1, x2, x3, a0, a1, a2, a3, h, c):
    """-> h_new, c_new, s0, s1, s2, s3 (unused outputs are returned as given inputs)."""
    if CELL == 0:
        h_new, c_new, s0, s1, s2, s3 = lstm_fwd(x0, x1, x2, x3, a0, a1, a2, a3, c)
    elif CELL == 1:
        h_new, s0, s1, s2 = gru_fwd(x0, x1, x2, a0, a1, a2, h)
        c_new, s3 = c, a2
    elif CELL == 4:
        h_new, s0, s1, s2 = gru_rb_fwd(x0, x1, x2, a0, a1, a2, h)
        c_new, s3 = c, a2
    else:
        if CELL == 3:
            h_new = relu(x0 + a0)
        else:
            h_new = tanh(x0 + a0)
        c_new, s0, s1, s2, s3 = c, h_new, a1, a2, a3
    return h_new, c_new, s0, s1, s2, s3


@triton.jit
def cell_bwd(CELL: tl.constexpr, dh, dc, s0, s1, s2, s3, st):
    """-> d0, d1, d2, d3 (fed by gx), d2h (gate 2 fed by h W_hhᵀ), dh_direct, dc_prev."""
    if CELL == 0:
        d0, d1, d2, d3, d2h, dh_direct, dc_prev = lstm_bwd(dh, dc, s0, s1, s2, s3, st)
    elif CELL == 1:
        d0, d1, d2, d2h, dh_direct = gru_bwd(dh, s0, s1, s2, s3, st)
        d3, dc_prev = d2, dc
    elif CELL == 4:
        d1, d2, dh_direct = gru_rb_bwd(dh, s1, s2, st)
        d0, d2h, d3, dc_prev = tl.zeros_like(dh), d2, d2, dc
    else:
        d0 = rnn_bwd(dh, s0, CELL == 3)
        d1, d2, d3, d2h, dh_direct, dc_prev = d0, d0, d0, d0, tl.zeros_like(dh), dc
    return d0, d1, d2, d3, d2h, dh_direct, dc_prev
