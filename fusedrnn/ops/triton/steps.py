"""The per-step pieces of the recurrence kernels (kernels.py): the program's rows and
direction, W tiles kept on chip, the step's contractions, the pointwise updates with
what they store, the LSTM projection's phases and the second phase of the GRU with its
reset gate before the product (CELL 4: W_hn (r ⊙ h) needs r of every unit first).

Dimensions (as in kernels.py): T steps, B batch, H hidden units, P the exchanged state's
width (proj_size, else H), G gates, GS gate slots on the MMA's M side, SA fp32 values
saved per unit and step, D directions; BLOCK_B batch rows per program, BLOCK_N units
(or rows of h) per tile, KP/NKP the contraction pieces of W_hh. Offsets into (rows, cols)
arrays are a row-offset vector over the batch (int64, times the row stride) plus a
column vector over units.
"""
import triton
import triton.language as tl

from . import model
from .cells import cell_bwd, cell_fwd, reset_grad, sigmoid
from .tiles import (behind, cols_T, hold, issued, load_slots, load_slots_raw, mma, mma_xw, split_slots, step_rows,
                    store_slots, to_out, w_cols, w_rows, widen)

#: chunks a streamed contraction keeps in flight (contract_fwd / contract_bwd: two slots by hand)
STREAM_AHEAD = tl.constexpr(2)
#: the backward's resident pieces in K slices, one per warp (model.RESIDENT_BWD_SPLIT: config runs
#: them at that many warps), and the exchanged values one sweep of their loads stages
#: (model.RESIDENT_BWD_SWEEP_ELEMS)
KSPLIT = tl.constexpr(model.RESIDENT_BWD_SPLIT)
SWEEP_ELEMS = tl.constexpr(model.RESIDENT_BWD_SWEEP_ELEMS)
#: steps between the load of the cta layout's step inputs and their use (1 or 2: buffers a and b)
CTA_AHEAD = tl.constexpr(model.CTA_PREFETCH_AHEAD)


@triton.jit
def program_rows(p_len, p_sync, flags, T, B, D, BLOCK_B: tl.constexpr):
    """This program's batch rows, direction and barrier: the runtime flags (has_bias,
    reverse, save), the direction d (grid axis 2, or the launch's one direction with
    FLAG_DIR1; direction 1 runs backward in time), o_b (BLOCK_B,) rows and their mask, each
    row's length, the barrier counter of this direction and batch tile, the timeout flag."""
    has_bias, has_len, reverse, save = (flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0, (flags & 8) != 0
    d = tl.where(D > 1, tl.program_id(2) + ((flags >> 4) & 1), 0)  # D == 1 (specialised): d folds to 0
    reverse = reverse != (d == 1)
    i_b = tl.program_id(1)
    o_b = i_b * BLOCK_B + tl.arange(0, BLOCK_B)
    m_b = o_b < B
    # block mask with a scalar condition: tl.where, not &, which the interpreter turns int32 (Triton 3.9 rejects it)
    b_len = tl.where(has_len, tl.load(p_len + o_b, mask=tl.where(has_len, m_b, False), other=0), T)
    p_cnt = p_sync + tl.program_id(2) * tl.num_programs(1) + i_b
    p_err = p_sync + tl.num_programs(2) * tl.num_programs(1)
    return has_bias, reverse, save, d, o_b, m_b, b_len, p_cnt, p_err


@triton.jit
def unit_tile(tile, o_rows, m_b, N, BLOCK: tl.constexpr):
    """Rows of tile number `tile` of an (B, N) array: o_n (BLOCK,), the (BLOCK, BLOCK_B)
    mask and the offsets (o_rows: the batch rows times N)."""
    o_n = tile * BLOCK + tl.arange(0, BLOCK)
    return o_n, (o_n < N)[:, None] & m_b[None, :], o_rows[None, :] + o_n[:, None]


@triton.jit
def resident_w_fwd(p_w, n0, N, K, G: tl.constexpr, GS: tl.constexpr, BLOCK_N: tl.constexpr, KP: tl.constexpr,
                   NKP: tl.constexpr, SPLIT: tl.constexpr = False):
    """The tile's stacked rows of W (G*N, K) as NKP pieces (GS*BLOCK_N, KP), loaded once; SPLIT:
    transposed in KSPLIT slices, (KSPLIT, KP // KSPLIT, GS*BLOCK_N), for contract_split."""
    ws = ()
    if SPLIT:
        o_r = tl.arange(0, GS * BLOCK_N)
        o_g = o_r // BLOCK_N
        o_u = n0 + o_r % BLOCK_N
        row = ((o_g * N + o_u) * K)[None, None, :]
        m_r = ((o_g < G) & (o_u < N))[None, None, :]
        for kp in tl.static_range(NKP):
            k = tl.permute(kp * KP + split_k(KP), (0, 2, 1))  # (KSPLIT, KP // KSPLIT, 1): the slice's columns down
            ws = ws + (tl.load(p_w + row + k, mask=(k < K) & m_r, other=0.0),)
    else:
        for kp in tl.static_range(NKP):
            ws = ws + (w_rows(p_w, n0, kp * KP, N, K, G, GS, BLOCK_N, KP),)
    return ws


@triton.jit
def resident_w_gates(p_w, o_n, N, K, G: tl.constexpr, KP: tl.constexpr):
    """The cta layout's backward W: the tile's columns of W (G*K, N) per gate, G pieces
    (BLOCK_N, KP), loaded once (each multiplies that gate's gradient tile)."""
    ws = ()
    for g in tl.static_range(G):
        ws = ws + (w_cols(p_w, g, o_n, 0, N, K, KP),)
    return ws


@triton.jit
def resident_w_bwd(p_w, o_n, N, GK, KP: tl.constexpr, NKP: tl.constexpr):
    """The tile's columns of W (GK, N) as NKP pieces (BLOCK_N, KP), loaded once. The backward's
    contraction runs over all G*K rows of W_hh at once (GK = G*K: the gates' blocks are
    contiguous in W_hh and in d_gates), so a piece may straddle two gates."""
    ws = ()
    if NKP > 1:  # in KSPLIT slices (contract_split)
        for kp in tl.static_range(NKP):
            k = kp * KP + split_k(KP)
            k = tl.permute(k, (0, 2, 1))  # (KSPLIT, KP // KSPLIT, 1): the slice's rows down
            m = (k < GK) & (o_n < N)[None, None, :]
            ws = ws + (tl.load(p_w + k * N + o_n[None, None, :], mask=m, other=0.0),)
    else:
        for kp in tl.static_range(NKP):
            ws = ws + (w_cols(p_w, 0, o_n, kp * KP, N, GK, KP),)
    return ws


@triton.jit
def split_k(KP: tl.constexpr):
    """The offsets 0..KP-1 of a piece as (KSPLIT, 1, KP // KSPLIT): slice s holds s*KS.. ."""
    KS: tl.constexpr = KP // KSPLIT
    return tl.arange(0, KSPLIT)[:, None, None] * KS + tl.arange(0, KS)[None, None, :]


@triton.jit
def chunk_fwd(p_x, o_rx, m_b, p_w, n0, j, N, K, G: tl.constexpr, GS: tl.constexpr, BLOCK_N: tl.constexpr,
              KP: tl.constexpr):
    """Streamed chunk j of contract_fwd: (W rows, KP columns of x); all zeros (no memory
    traffic: every lane masked) for a chunk past the end."""
    k0 = j * KP
    return w_rows(p_w, n0, k0, N, K, G, GS, BLOCK_N, KP), cols_T(p_x, o_rx, m_b, k0, K, KP)


@triton.jit
def chunk_bwd(p_d, o_rd, m_b, p_w, o_n, j, n_k, N, K, G: tl.constexpr, KP: tl.constexpr):
    """Streamed chunk j of contract_bwd, in (gate, chunk) order: (W columns, KP rows of the
    gate's d block); past the last one the gate stays the last (never a block past W or
    d) and k0 >= K masks every lane."""
    g = tl.minimum(j // n_k, G - 1)
    k0 = (j - g * n_k) * KP
    return w_cols(p_w, g, o_n, k0, N, K, KP), cols_T(p_d + g * K, o_rd, m_b, k0, K, KP)


@triton.jit
def contract_fwd(acc, p_x, o_rx, m_b, p_w, ws, n0, N, K, G: tl.constexpr, GS: tl.constexpr, BLOCK_N: tl.constexpr,
                 KP: tl.constexpr, NKP: tl.constexpr, RESIDENT: tl.constexpr, PREC: tl.constexpr,
                 INTERP: tl.constexpr, ROTATE: tl.constexpr, SPLIT: tl.constexpr = False):
    """acc (GS*BLOCK_N, BLOCK_B) + the stacked rows n0.. of W (G*N, K) x xᵀ (rows o_rx of
    p_x, K wide): the gates from h_{t-1} (W_hh, K = P) or h_t from m_t (W_hr, K = H).

    Streamed, the chunks are software-pipelined by hand in STREAM_AHEAD = 2 slots: each slot
    is refilled with chunk j+2 (W from L1/L2, x from L2) right after chunk j's product, in
    place, so a step waits for one L2 round trip per two chunks. (Rotating three slots at
    the end of each iteration, as before, copied registers whose loads had just been
    issued, and the copy waited for them: one round trip per chunk.) Chunks past the end
    are masked: no memory traffic, and an odd count multiplies one chunk of zeros. ROTATE
    keeps that three-slot rotation (the forward projection's W_hr loop, and W_hh's over
    several tiles beside it: two slots in place there spill, compiled for sm_90). SPLIT (resident,
    pieces from resident_w_fwd's SPLIT): the product split in K over the warps, contract_split (the
    fp32 RNN at B16·H768, config.resident_split_fwd_ok)."""
    if RESIDENT and SPLIT:
        acc = acc + contract_split(p_x, o_rx, m_b, ws, K, KP, NKP, PREC, INTERP)
    elif RESIDENT:
        # the pieces' loads all written before the products, every piece behind the last load (16-bit)
        xs = ()
        for kp in tl.static_range(NKP):
            xs = xs + (cols_T(p_x, o_rx, m_b, kp * KP, K, KP),)
        for kp in tl.static_range(NKP):
            x = xs[kp]
            # 16-bit: every piece waits for the last load (tiles.behind; ptxas issued the first piece's
            # loads, waited, then the rest: 3 round trips at LSTM B16·H768). fp32's narrow pieces load in
            # one sweep already; held behind the last, their mma chain grew (B8·H128: 59 -> 63)
            if kp < NKP - 1 and ws[kp].dtype != tl.float32:
                x = behind(x, xs[NKP - 1], K > 0)
            acc = mma(ws[kp], issued(x, INTERP), acc, PREC, INTERP)
    elif ROTATE:
        w0, x0 = chunk_fwd(p_x, o_rx, m_b, p_w, n0, 0, N, K, G, GS, BLOCK_N, KP)
        w1, x1 = chunk_fwd(p_x, o_rx, m_b, p_w, n0, 1, N, K, G, GS, BLOCK_N, KP)
        w2, x2 = chunk_fwd(p_x, o_rx, m_b, p_w, n0, 2, N, K, G, GS, BLOCK_N, KP)
        for j in range(0, tl.cdiv(K, KP)):
            w3, x3 = chunk_fwd(p_x, o_rx, m_b, p_w, n0, j + 3, N, K, G, GS, BLOCK_N, KP)
            acc = mma(w0, x0, acc, PREC, INTERP)
            w0, x0, w1, x1, w2, x2 = w1, x1, w2, x2, w3, x3
    else:
        w0, x0 = chunk_fwd(p_x, o_rx, m_b, p_w, n0, 0, N, K, G, GS, BLOCK_N, KP)
        w1, x1 = chunk_fwd(p_x, o_rx, m_b, p_w, n0, 1, N, K, G, GS, BLOCK_N, KP)
        for j in range(0, tl.cdiv(K, KP), STREAM_AHEAD):
            acc = mma(w0, x0, acc, PREC, INTERP)
            w0, x0 = chunk_fwd(p_x, o_rx, m_b, p_w, n0, j + 2, N, K, G, GS, BLOCK_N, KP)
            acc = mma(w1, x1, acc, PREC, INTERP)
            w1, x1 = chunk_fwd(p_x, o_rx, m_b, p_w, n0, j + 3, N, K, G, GS, BLOCK_N, KP)
    return acc


@triton.jit
def contract_split(p_d, o_rd, m_b, ws, GK, KP: tl.constexpr, NKP: tl.constexpr, PREC: tl.constexpr,
                   INTERP: tl.constexpr):
    """(BLOCK_N, BLOCK_B) = Σ over the GK rows of W (pieces ws from resident_w_bwd, NKP > 1)
    ᵀ x the rows o_rd of p_d (GK wide), the backward's resident product with its K split.

    A backward tile has only BLOCK_N = 8 units: as one (8, KP) x (KP, BLOCK_B) product per
    piece, every warp of the 8 ran all of it (the mma layout has one tile of rows to give
    out) and held all of its operands: 384 mma per warp and step at LSTM B16·H768, and a
    resident slice spilled. Here each piece is a batched product over KSPLIT slices of its
    KP rows, batch (BLOCK_B) on the M side and units on N: Triton gives a batched dot's
    warps the batch axis, so warp s multiplies slice s alone (48 mma per warp) and the
    slices' partial sums meet once per step (tl.sum over the slices). The pieces' loads go
    in sweeps of at most SWEEP_ELEMS values (all loads of a sweep written before its
    products): one sweep for the GRU's 9 pieces of 256, two for the LSTM's 12 (one sweep
    of 12 spills, compiled for sm_90). In one sweep every piece is held behind the last
    piece's load (tiles.behind), so ptxas issues all of them before any waits: one round trip
    (it issued them in 2-4 groups). Needs KP // KSPLIT >= 16 on a GPU (config: 128 or 256).

    A batch tile of 8 rows (mma.sync's n8; config.resident_ok: 16-unit tiles) puts W on the M
    side instead, (BLOCK_N, KS) x (KS, 8) per slice: half the exchanged values per program, so
    the LSTM B16·H768's 12 pieces load in one sweep without spilling (2 round trips, where 16
    rows took two sweeps and 4)."""
    BB: tl.constexpr = o_rd.shape[0]
    W_LEFT: tl.constexpr = BB < 16
    SW: tl.constexpr = min(NKP, max(1, SWEEP_ELEMS // (KP * BB)))
    k_s = split_k(KP)  # (KSPLIT, 1, KS)
    if W_LEFT:
        k_s = tl.permute(k_s, (0, 2, 1))  # (KSPLIT, KS, 1): x as (KSPLIT, KS, BB)
        off = o_rd[None, None, :] + k_s
        m3 = m_b[None, None, :]
        acc = tl.zeros((KSPLIT, ws[0].shape[2], BB), tl.float32)
    else:
        off = o_rd[None, :, None] + k_s
        m3 = m_b[None, :, None]
        acc = tl.zeros((KSPLIT, BB, ws[0].shape[2]), tl.float32)
    for g in tl.static_range((NKP + SW - 1) // SW):
        xs = ()
        for i in tl.static_range(SW):
            k0 = (g * SW + i) * KP  # past the last piece: k0 >= GK, every lane masked
            xs = xs + (tl.load((p_d + k0) + off, mask=m3 & (k0 + k_s < GK), other=0.0, cache_modifier=".cg"),)
        for i in tl.static_range(SW):
            if g * SW + i < NKP:
                x = xs[i]
                if SW == NKP and i < SW - 1:  # one sweep: every piece waits for the last load (tiles.behind)
                    x = behind(x, xs[SW - 1], GK > 0)
                if W_LEFT:
                    acc = mma(tl.permute(ws[g * SW + i], (0, 2, 1)), issued(x, INTERP), acc, PREC, INTERP)
                else:
                    acc = mma_xw(issued(x, INTERP), ws[g * SW + i], acc, PREC, INTERP)
    out = tl.sum(acc, axis=0)
    if not W_LEFT:
        out = tl.trans(out)
    return out


@triton.jit
def contract_bwd(acc, p_d, o_rd, m_b, p_w, ws, o_n, N, K, G: tl.constexpr, KP: tl.constexpr, NKP: tl.constexpr,
                 RESIDENT: tl.constexpr, PREC: tl.constexpr, INTERP: tl.constexpr):
    """acc (BLOCK_N, BLOCK_B) + Σ_g W[g*K:(g+1)*K, o_n]ᵀ x (block g of the rows o_rd of p_d)ᵀ
    for W (G*K, N): dh_{t-1} from d_gh (W_hh, K = H) or dm_t from dh_t (W_hr, K = P).

    Resident, the NKP pieces (ws, from resident_w_bwd) run over all G*K rows at once: in one
    piece every piece's loads written before the products (contract_fwd), in several the
    K-split product of contract_split. Streamed, the (gate, chunk)
    sequence is software-pipelined in two slots as in contract_fwd. Successive products
    alternate between two accumulators, two independent MMA chains (summed at the end)."""
    acc_b = tl.zeros_like(acc)
    if RESIDENT and NKP > 1:
        acc = acc + contract_split(p_d, o_rd, m_b, ws, G * K, KP, NKP, PREC, INTERP)
    elif RESIDENT:  # the NKP pieces of all G*K rows (resident_w_bwd), alternating accumulators
        xs = ()
        for kp in tl.static_range(NKP):
            xs = xs + (cols_T(p_d, o_rd, m_b, kp * KP, G * K, KP),)
        for kp in tl.static_range(NKP):
            acc, acc_b = acc_b, mma(ws[kp], issued(xs[kp], INTERP), acc, PREC, INTERP)
    else:
        n_k = tl.cdiv(K, KP)
        w0, x0 = chunk_bwd(p_d, o_rd, m_b, p_w, o_n, 0, n_k, N, K, G, KP)
        w1, x1 = chunk_bwd(p_d, o_rd, m_b, p_w, o_n, 1, n_k, N, K, G, KP)
        for j in range(0, G * n_k, STREAM_AHEAD):
            acc = mma(w0, x0, acc, PREC, INTERP)
            w0, x0 = chunk_bwd(p_d, o_rd, m_b, p_w, o_n, j + 2, n_k, N, K, G, KP)
            acc_b = mma(w1, x1, acc_b, PREC, INTERP)
            w1, x1 = chunk_bwd(p_d, o_rd, m_b, p_w, o_n, j + 3, n_k, N, K, G, KP)
    return acc + acc_b


@triton.jit
def zone_masks(p_zh, p_zc, o_r, o_n, m, s_zh, s_zc, ZONE_H: tl.constexpr, ZONE_C: tl.constexpr):
    """The step's zoneout masks of one tile (rows o_r, row strides s_zh and s_zc); 0.0 where off."""
    zh = 0.0
    zc = 0.0
    if ZONE_H:
        zh = tl.load(p_zh + (o_r * s_zh)[None, :] + o_n[:, None], mask=m, other=0.0)
    if ZONE_C:
        zc = tl.load(p_zc + (o_r * s_zc)[None, :] + o_n[:, None], mask=m, other=0.0)
    return zh, zc


@triton.jit
def fwd_update(CELL: tl.constexpr, acc, bias, x0, x1, x2, x3, h, c, act, o_r, o_n, m, p_y, o_ry, p_acts, p_state, H,
               save, GS: tl.constexpr, SA: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
               CARRY: tl.constexpr, PROJ: tl.constexpr, INTERP: tl.constexpr, zh=0.0, zc=0.0,
               ZONE_H: tl.constexpr = False, ZONE_C: tl.constexpr = False):
    """One tile's pointwise step: gates, the cell, y and what the backward needs; -> (h, c).
    With PROJ the first value is m_t = o ⊙ tanh(c_t) (0 on inactive rows) and y is the
    projection's (project_out). ZONE_H / ZONE_C: zoneout after the cell, h_t = zh h + (1 - zh) h̃_t
    (c likewise); the saved activations stay the cell's own (RNN: h̃_t)."""
    a0, a1, a2, a3 = split_slots(acc + bias[:, None], GS, BLOCK_N, BLOCK_B)
    h_new, c_new, s0, s1, s2, s3 = cell_fwd(CELL, x0, x1, x2, x3, a0, a1, a2, a3, h, c)
    if ZONE_H:
        h_new = zh * h + (1.0 - zh) * h_new
    if ZONE_C:
        c_new = zc * c + (1.0 - zc) * c_new
    a = act[None, :]
    if not PROJ:
        tl.store(p_y + o_ry[None, :] + o_n[:, None], to_out(tl.where(a, h_new, 0.0), p_y, INTERP), mask=m)
    if save:
        store_slots(p_acts, o_r * (SA * H), o_n, m, H, SA, s0, s1, s2, s3, INTERP)
        o_s = (o_r * H)[None, :] + o_n[:, None]
        if CELL == 0:
            tl.store(p_state + o_s, c, mask=m)
        elif CELL == 1 or CELL == 4:
            tl.store(p_state + o_s, h, mask=m)
    if CARRY:  # units past H keep their zero state: here the state is the next product's operand,
        a = a & m  # and a NaN there (0 x inf from a masked W row) would reach the real units
    if PROJ:
        return tl.where(a, h_new, 0.0), tl.where(a, c_new, c)
    return tl.where(a, h_new, h), tl.where(a, c_new, c)


@triton.jit
def project_out(hp, h, act, o_p, m_p, p_y, o_ry, CARRY: tl.constexpr, INTERP: tl.constexpr):
    """The projection's step for rows o_p of h: y_t = h_t = (W_hr m_t)[o_p] on active rows (0
    elsewhere); -> the new state, which rows past their length keep."""
    a = act[None, :]
    tl.store(p_y + o_ry[None, :] + o_p[:, None], to_out(tl.where(a, hp, 0.0), p_y, INTERP), mask=m_p)
    if CARRY:  # rows past P keep their zero: they are the next product's operand
        a = a & m_p
    return tl.where(a, hp, h)


@triton.jit
def bwd_saved(p_dy, p_acts, p_state, s, b_len, o_b, m_b, o_n, m, B, H, s_y, reverse, CELL: tl.constexpr,
              SA: tl.constexpr, PROJ: tl.constexpr):
    """dy (row stride s_y) and the saved activations/state of loop step s, fp32 (nothing is
    read when s < 0). With PROJ dy is 0 here: it enters through the projection (load_dy)."""
    dy, s0, s1, s2, s3, st = bwd_saved_raw(p_dy, p_acts, p_state, s, b_len, o_b, m_b, o_n, m, B, H, s_y, reverse,
                                           CELL, SA, PROJ)
    return widen(dy), s0, s1, s2, s3, st


@triton.jit
def bwd_saved_raw(p_dy, p_acts, p_state, s, b_len, o_b, m_b, o_n, m, B, H, s_y, reverse, CELL: tl.constexpr,
                  SA: tl.constexpr, PROJ: tl.constexpr):
    """bwd_saved with dy as loaded, in its own type (the rest is fp32 already): widen at use."""
    o_r, _ = step_rows(tl.maximum(s, 0), b_len, o_b, m_b, B, reverse)
    m = tl.where(s >= 0, m, False)
    o_s = (o_r * H)[None, :] + o_n[:, None]
    s0, s1, s2, s3 = load_slots(p_acts, o_r * (SA * H), o_n, m, H, SA)
    if PROJ:
        dy = tl.zeros_like(s0)
    else:
        dy = tl.load(p_dy + (o_r * s_y)[None, :] + o_n[:, None], mask=m, other=0.0)
    st = s0  # unused by the RNN
    if CELL < 2 or CELL == 4:
        st = tl.load(p_state + o_s, mask=m, other=0.0)
    return dy, s0, s1, s2, s3, st


@triton.jit
def bwd_inputs(p_dy, p_acts, p_state, p_zh, p_zc, s, b_len, o_b, m_b, o_n, m, B, H, s_y, s_zc, reverse,
               CELL: tl.constexpr, SA: tl.constexpr, PROJ: tl.constexpr, ZONE_H: tl.constexpr, ZONE_C: tl.constexpr,
               PLAIN: tl.constexpr):
    """The single-tile backward's inputs of loop step s that do not depend on dh, as loaded
    (nothing read when s < 0): dy (held: tiles.hold; release it at its use), the saved
    activations and state, the zoneout masks; -> (dy, s0, s1, s2, s3, st, zh, zc)."""
    dy, s0, s1, s2, s3, st = bwd_saved_raw(p_dy, p_acts, p_state, s, b_len, o_b, m_b, o_n, m, B, H, s_y, reverse,
                                           CELL, SA, PROJ)
    dy = hold(dy, PLAIN)
    o_r, _ = step_rows(tl.maximum(s, 0), b_len, o_b, m_b, B, reverse)
    zh, zc = zone_masks(p_zh, p_zc, o_r, o_n, tl.where(s >= 0, m, False), s_y, s_zc, ZONE_H, ZONE_C)
    return dy, s0, s1, s2, s3, st, zh, zc


@triton.jit
def fwd_inputs(p_gx, p_zh, p_zc, s, T, b_len, o_b, m_b, o_n, m, o_p, m_p, B, H, G: tl.constexpr, s_gx, s_zh,
               s_zc, reverse, ZONE_H: tl.constexpr, ZONE_C: tl.constexpr, PLAIN: tl.constexpr):
    """The single-tile forward's inputs of loop step s that do not depend on h, as loaded
    (nothing read when s >= T): gx's gate slots (tiles.hold; release them at their use)
    and the zoneout masks (h's on the rows o_p, c's on o_n); -> (x0, x1, x2, x3, zh, zc)."""
    o_r, _ = step_rows(s, b_len, o_b, m_b, B, reverse)
    x0, x1, x2, x3 = load_slots_raw(p_gx, o_r * s_gx, o_n, tl.where(s < T, m, False), H, G)
    x0, x1, x2, x3 = hold(x0, PLAIN), hold(x1, PLAIN), hold(x2, PLAIN), hold(x3, PLAIN)
    zh = zone_masks(p_zh, p_zc, o_r, o_p, tl.where(s < T, m_p, False), s_zh, s_zc, ZONE_H, False)[0]
    zc = zone_masks(p_zh, p_zc, o_r, o_n, tl.where(s < T, m, False), s_zh, s_zc, False, ZONE_C)[1]
    return x0, x1, x2, x3, zh, zc


@triton.jit
def bwd_update(CELL: tl.constexpr, dh, dc, dy, s0, s1, s2, s3, st, act, o_r, o_n, m, p_dgh, p_dgx, s_g, H,
               G: tl.constexpr, WRITE_DGX: tl.constexpr, CARRY: tl.constexpr, INTERP: tl.constexpr, zh=0.0, zc=0.0,
               ZONE_H: tl.constexpr = False, ZONE_C: tl.constexpr = False):
    """One tile's pointwise backward step: stores d_gh (and d_gx; row stride s_g); returns
    the h-side gate gradients, the part of dh_{t-1} that bypasses W_hh, and dc_{t-1}.
    Inactive rows give exact zeros and pass dh, dc through: nothing computed from a padded
    step leaks. ZONE_H / ZONE_C: the cell gets (1 - z) of the gradient, the previous state z."""
    d_h = dh + dy
    d_cell, dc_cell = d_h, dc
    if ZONE_H:
        d_cell = (1.0 - zh) * d_h
    if ZONE_C:
        dc_cell = (1.0 - zc) * dc
    d0, d1, d2, d3, d2h, dh_direct, dc_prev = cell_bwd(CELL, d_cell, dc_cell, s0, s1, s2, s3, st)
    if ZONE_H:
        dh_direct = dh_direct + zh * d_h
    if ZONE_C:
        dc_prev = dc_prev + zc * dc
    a = act[None, :]
    if CARRY:  # units past H too: here the gate gradients are the next product's operand
        a = a & m
    d0 = tl.where(a, d0, 0.0)
    d1 = tl.where(a, d1, 0.0)
    d2 = tl.where(a, d2, 0.0)
    d3 = tl.where(a, d3, 0.0)
    d2h = tl.where(a, d2h, 0.0)
    o_rg = o_r * s_g
    store_slots(p_dgh, o_rg, o_n, m, H, G, d0, d1, d2h, d3, INTERP)
    if WRITE_DGX:
        store_slots(p_dgx, o_rg, o_n, m, H, G, d0, d1, d2, d3, INTERP)
    return d0, d1, d2h, d3, tl.where(a, dh_direct, dh), tl.where(a, dc_prev, dc)


@triton.jit
def load_dy(p_dy, s, b_len, o_b, m_b, o_p, m_p, B, s_y, reverse):
    """The projection's backward: dy of loop step s for rows o_p of h (0 when s < 0)."""
    o_r, _ = step_rows(tl.maximum(s, 0), b_len, o_b, m_b, B, reverse)
    m = tl.where(s >= 0, m_p, False)  # not m_p & (s >= 0): a mask stays boolean (tests/test_triton_masks.py)
    return tl.load(p_dy + (o_r * s_y)[None, :] + o_p[:, None], mask=m, other=0.0).to(tl.float32)


@triton.jit
def store_grad_h(p_g, dh, dy, s, b_len, o_b, m_b, o_p, m_p, B, P, reverse):
    """The projection's backward: the gradient reaching h at loop step s (dy and the
    recurrence's dh; 0 on inactive rows), stored to p_g (T, B, P) at the step's rows; it
    is both what dW_hr is computed from and what the next phase exchanges. Nothing is
    stored when s < 0."""
    o_r, act = step_rows(tl.maximum(s, 0), b_len, o_b, m_b, B, reverse)
    g = tl.where(act[None, :], dh + dy, 0.0)
    tl.store(p_g + (o_r * P)[None, :] + o_p[:, None], g, mask=tl.where(s >= 0, m_p, False))


@triton.jit
def reset_state(acc, bias, x0, h, act, m, GS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    """GRU_RB, the first phase: r ⊙ h_{t-1} of one tile (BLOCK_N, BLOCK_B) from the step's
    product acc (slot 0: W_hr h), its bias and x0 = the gx of r. Zero on inactive rows and on
    units past H: it is the n gate's operand, where a padded step's gx must not reach."""
    a0, _, _, _ = split_slots(acc + bias[:, None], GS, BLOCK_N, BLOCK_B)
    return tl.where(act[None, :] & m, sigmoid(x0 + a0) * h, 0.0)


@triton.jit
def with_slot2(acc, acc_n, GS: tl.constexpr, BLOCK_N: tl.constexpr):
    """GRU_RB: the stacked product with slot 2 (the n gate) taken from acc_n = W_hh (r ⊙ h)."""
    rows = tl.arange(0, GS * BLOCK_N)[:, None]
    return tl.where((rows >= 2 * BLOCK_N) & (rows < 3 * BLOCK_N), acc_n, acc)


@triton.jit
def reset_bwd(g, r, h, dhx, act, m, o_r, o_n, p_dgh, p_dgx, s_g, WRITE_DGX: tl.constexpr, CARRY: tl.constexpr,
              INTERP: tl.constexpr):
    """GRU_RB, the backward's second phase for one tile: from g = W_hnᵀ d_n (the gradient of
    r ⊙ h_prev) and the step's saved r and h_prev, d_r (stored to slot 0 of d_gh and d_gx,
    which bwd_update left 0) and dh_prev's direct part plus g ⊙ r; -> (d_r, dh_direct)."""
    a = act[None, :]
    if CARRY:  # units past H too: d_r is the next product's operand
        a = a & m
    d_r, dh_r = reset_grad(g, r, h)
    d_r = tl.where(a, d_r, 0.0)
    o = (o_r * s_g)[None, :] + o_n[:, None]
    tl.store(p_dgh + o, d_r, mask=m)
    if WRITE_DGX:
        tl.store(p_dgx + o, to_out(d_r, p_dgx, INTERP), mask=m)
    return d_r, tl.where(a, dhx + dh_r, dhx)
