"""The fused decode step: one launch computes both GEMMs of one time step and the cell's
pointwise update (fusedrnn/ops/cell_step.py's optional `step`).

Dimensions
    B         batch; BLOCK_B rows per program (grid axis 1), the N side of every MMA
    I         input width (W_ih's contraction), H hidden units (W_hh's contraction)
    G         gates (LSTM 4, GRU 3, RNN 1); GS gate slots stacked on the MMA's M side
              (4 for LSTM and GRU, whose fourth slot is zero; 1 for the RNN)
    BLOCK_N   units per program (grid axis 0); KC the contraction's chunk (masked at the
              edge, never padded)

Like the recurrence kernels, the products are transposed: W rows of the program's units,
all gate slots stacked (GS*BLOCK_N, KC), times columns of xᵀ or hᵀ (KC, BLOCK_B), so units
fill the MMA's M side at batch 1. The two products stay apart (the GRU multiplies
W_hn h + b_hn by r); the pointwise update is cells.cell_fwd, the recurrence's own.
Each weight byte is read once per batch tile; accumulation and state math are fp32.
"""
import triton
import triton.language as tl

from .cells import cell_fwd
from .tiles import cols_T, split_slots, stacked_rows, to_out, w_rows


@triton.jit
def _dot(b_w, b_x, acc, PREC: tl.constexpr, INTERP: tl.constexpr):
    """acc + b_w @ b_x, both operands in the input dtype (exact: no hi/lo split as in
    tiles.mma, whose right operand is fp32 state). fp32: precision PREC (tf32x3 on a GPU);
    the interpreter cannot multiply 16-bit floats, so there they are widened (exact)."""
    if b_w.dtype == tl.float32:
        acc = tl.dot(b_w, b_x, acc, input_precision=PREC)
    elif INTERP:
        acc = tl.dot(b_w.to(tl.float32), b_x.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(b_w, b_x, acc)
    return acc


@triton.jit
def _product(p_w, p_v, o_row, m_b, n0, N, K, G: tl.constexpr, GS: tl.constexpr, BLOCK_N: tl.constexpr,
             BLOCK_B: tl.constexpr, KC: tl.constexpr, PREC: tl.constexpr, INTERP: tl.constexpr):
    """(GS*BLOCK_N, BLOCK_B) fp32: the program's stacked rows of W (G*N, K) times vᵀ, v (B, K)."""
    acc = tl.zeros((GS * BLOCK_N, BLOCK_B), tl.float32)
    for k0 in range(0, K, KC):
        acc = _dot(w_rows(p_w, n0, k0, N, K, G, GS, BLOCK_N, KC), cols_T(p_v, o_row, m_b, k0, K, KC), acc, PREC,
                   INTERP)
    return acc


@triton.jit(do_not_specialize=["HAS_BIH", "HAS_BHH"])
def cell_step_kernel(
    p_x,      # (B, I) input, input dtype
    p_h0,     # (B, H) state entering the step, input dtype
    p_c0,     # (B, H) LSTM cell state, input dtype (read only for the LSTM)
    p_wih,    # (G*H, I) W_ih, input dtype
    p_whh,    # (G*H, H) W_hh, input dtype
    p_bih,    # (G*H,) b_ih, input dtype (read only if HAS_BIH)
    p_bhh,    # (G*H,) b_hh, input dtype (read only if HAS_BHH)
    p_h,      # (B, H) out, input dtype
    p_c,      # (B, H) out, LSTM only, input dtype
    B, I, H,
    HAS_BIH, HAS_BHH,  # runtime flags: one compiled kernel with or without biases
    CELL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, KC: tl.constexpr, PREC: tl.constexpr,
    INTERP: tl.constexpr,
):
    G: tl.constexpr = 4 if CELL == 0 else 3 if CELL == 1 else 1
    GS: tl.constexpr = 1 if G == 1 else 4
    n0 = tl.program_id(0) * BLOCK_N
    o_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    m_b = o_b < B
    o_n = n0 + tl.arange(0, BLOCK_N)
    m = (o_n < H)[:, None] & m_b[None, :]
    acc_x = _product(p_wih, p_x, o_b * I, m_b, n0, H, I, G, GS, BLOCK_N, BLOCK_B, KC, PREC, INTERP)
    acc_h = _product(p_whh, p_h0, o_b * H, m_b, n0, H, H, G, GS, BLOCK_N, BLOCK_B, KC, PREC, INTERP)
    acc_x += stacked_rows(p_bih, n0, H, G, GS, BLOCK_N, HAS_BIH != 0)[:, None]
    acc_h += stacked_rows(p_bhh, n0, H, G, GS, BLOCK_N, HAS_BHH != 0)[:, None]
    x0, x1, x2, x3 = split_slots(acc_x, GS, BLOCK_N, BLOCK_B)
    a0, a1, a2, a3 = split_slots(acc_h, GS, BLOCK_N, BLOCK_B)
    o_tile = (o_b * H)[None, :] + o_n[:, None]  # (BLOCK_N, BLOCK_B): units down, batch across
    h = tl.load(p_h0 + o_tile, mask=m, other=0.0).to(tl.float32)
    c = h
    if CELL == 0:
        c = tl.load(p_c0 + o_tile, mask=m, other=0.0).to(tl.float32)
    h_new, c_new, _, _, _, _ = cell_fwd(CELL, x0, x1, x2, x3, a0, a1, a2, a3, h, c)
    tl.store(p_h + o_tile, to_out(h_new, p_h, INTERP), mask=m)
    if CELL == 0:
        tl.store(p_c + o_tile, to_out(c_new, p_c, INTERP), mask=m)
