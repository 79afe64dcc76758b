"""The fused recurrence kernels: one forward and one backward for every cell (CELL constexpr;
the cells' pointwise math is in cells.py, the shared tile pieces in tiles.py).

Dimensions
    T         time steps (the loop inside the kernels): loop step s visits time t per row
    B         batch; BLOCK_B rows per program (grid axis 1), the N side of every MMA
    H         hidden units; BLOCK_N units per tile, N_TILES tiles per program (grid axis 0)
    G         gates (LSTM 4, GRU 3, RNN 1); GS gate slots stacked on the MMA's M side (4 for
              LSTM and GRU, whose fourth slot is zero; 1 for the RNN); SA fp32 values saved
              per unit and step (LSTM/GRU 4, RNN 1)
    KP        width of one piece of the contraction over H: with RESIDENT, W_hh is loaded once
              as NKP pieces (tuples of tiles kept on chip); otherwise it is streamed from L2
              in KP-wide chunks, masked at H (never padded to a power of two)

Each step's product is transposed: the W_hh rows of the program's units, all gate slots
stacked (GS*BLOCK_N, K), times the exchanged vector's columns (K, BLOCK_B), so hidden units
fill the MMA's M side even at batch 1 and the vector is staged once per step for all gates.
Pointwise tiles are (BLOCK_N, BLOCK_B): units down, batch across.

Layouts (chosen by config.py; constexprs N_TILES, RESIDENT, CARRY, BARRIER):
    grid   several programs per batch tile share its units (N_TILES tiles each); h_t
           (forward) or d_gates (backward) go through global memory, one grid barrier per step
    solo   one program per batch tile walks all units; a CTA barrier per step
    carry  one program per batch tile, one tile of all units, W_hh resident: the state stays
           in the program (no exchange through memory, no barrier)
With N_TILES == 1 the tile's own state stays in registers across steps and the next step's
inputs (gx, or dy and the saved activations) are loaded before the step's wait.
Runtime flags (has_bias, has_len, reverse, save: bits of `flags`) are a plain argument,
never specialised on: one compiled kernel serves every variant. Rows past their length change nothing (see tiles.step_rows).
"""
import triton
import triton.language as tl

from .cells import cell_bwd, cell_fwd
from .tiles import (cols_T, load_slots, mma, split_slots, stacked_rows, step_rows, store_slots, sync, to_out,
                    w_cols, w_rows)


@triton.jit
def resident_w_fwd(p_w, n0, H, G: tl.constexpr, GS: tl.constexpr, BLOCK_N: tl.constexpr, KP: tl.constexpr,
                   NKP: tl.constexpr):
    """The tile's stacked W_hh rows as NKP pieces (GS*BLOCK_N, KP), loaded once."""
    ws = ()
    for kp in tl.static_range(NKP):
        ws = ws + (w_rows(p_w, n0, kp * KP, H, G, GS, BLOCK_N, KP),)
    return ws


@triton.jit
def resident_w_bwd(p_w, o_n, H, G: tl.constexpr, KP: tl.constexpr, NKP: tl.constexpr):
    """The tile's W_hh columns per gate as G*NKP pieces (BLOCK_N, KP), loaded once."""
    ws = ()
    for g in tl.static_range(G):
        for kp in tl.static_range(NKP):
            ws = ws + (w_cols(p_w, g, o_n, kp * KP, H, KP),)
    return ws


@triton.jit
def contract_fwd(acc, p_x, o_rx, m_b, p_w, ws, n0, H, G: tl.constexpr, GS: tl.constexpr, BLOCK_N: tl.constexpr,
                 KP: tl.constexpr, NKP: tl.constexpr, RESIDENT: tl.constexpr, PREC: tl.constexpr,
                 INTERP: tl.constexpr):
    """acc (GS*BLOCK_N, BLOCK_B) + stacked W_hh rows of the tile x h_{t-1}ᵀ (h rows o_rx of p_x)."""
    if RESIDENT:
        for kp in tl.static_range(NKP):
            acc = mma(ws[kp], cols_T(p_x, o_rx, m_b, kp * KP, H, KP), acc, PREC, INTERP)
    else:
        for k0 in range(0, H, KP):
            acc = mma(w_rows(p_w, n0, k0, H, G, GS, BLOCK_N, KP), cols_T(p_x, o_rx, m_b, k0, H, KP), acc, PREC,
                      INTERP)
    return acc


@triton.jit
def contract_bwd(acc, p_d, o_rd, m_b, p_w, ws, o_n, H, G: tl.constexpr, KP: tl.constexpr, NKP: tl.constexpr,
                 RESIDENT: tl.constexpr, PREC: tl.constexpr, INTERP: tl.constexpr):
    """acc (BLOCK_N, BLOCK_B) + Σ_g W_hh[g*H:(g+1)*H, units]ᵀ x d_ghᵀ (rows o_rd of p_d)."""
    if RESIDENT:
        for g in tl.static_range(G):
            for kp in tl.static_range(NKP):
                acc = mma(ws[g * NKP + kp], cols_T(p_d + g * H, o_rd, m_b, kp * KP, H, KP), acc, PREC, INTERP)
    else:
        for g in tl.static_range(G):
            for k0 in range(0, H, KP):
                acc = mma(w_cols(p_w, g, o_n, k0, H, KP), cols_T(p_d + g * H, o_rd, m_b, k0, H, KP), acc, PREC,
                          INTERP)
    return acc


@triton.jit
def fwd_update(CELL: tl.constexpr, acc, bias, x0, x1, x2, x3, h, c, act, o_r, o_n, m, p_y, p_acts, p_state, H,
               save, GS: tl.constexpr, SA: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
               CARRY: tl.constexpr, INTERP: tl.constexpr):
    """One tile's pointwise step: gates, the cell, y and what the backward needs; -> (h, c)."""
    a0, a1, a2, a3 = split_slots(acc + bias[:, None], GS, BLOCK_N, BLOCK_B)
    h_new, c_new, s0, s1, s2, s3 = cell_fwd(CELL, x0, x1, x2, x3, a0, a1, a2, a3, h, c)
    a = act[None, :]
    o_y = (o_r * H)[None, :] + o_n[:, None]
    tl.store(p_y + o_y, to_out(tl.where(a, h_new, 0.0), p_y, INTERP), mask=m)
    if save:
        store_slots(p_acts, o_r * (SA * H), o_n, m, H, SA, s0, s1, s2, s3, INTERP)
        if CELL == 0:
            tl.store(p_state + o_y, c, mask=m)
        elif CELL == 1:
            tl.store(p_state + o_y, h, mask=m)
    if CARRY:  # units past H keep their zero state: here the state is the next product's operand,
        a = a & m  # and a NaN there (0 x inf from a masked W row) would reach the real units
    return tl.where(a, h_new, h), tl.where(a, c_new, c)


@triton.jit
def bwd_saved(p_dy, p_acts, p_state, s, b_len, o_b, m_b, o_n, m, B, H, reverse, CELL: tl.constexpr,
              SA: tl.constexpr):
    """dy and the saved activations/state of loop step s (nothing is read when s < 0)."""
    o_r, _ = step_rows(tl.maximum(s, 0), b_len, o_b, m_b, B, reverse)
    m = m & (s >= 0)
    o_y = (o_r * H)[None, :] + o_n[:, None]
    dy = tl.load(p_dy + o_y, mask=m, other=0.0).to(tl.float32)
    s0, s1, s2, s3 = load_slots(p_acts, o_r * (SA * H), o_n, m, H, SA)
    st = dy
    if CELL < 2:
        st = tl.load(p_state + o_y, mask=m, other=0.0)
    return dy, s0, s1, s2, s3, st


@triton.jit
def bwd_update(CELL: tl.constexpr, dh, dc, dy, s0, s1, s2, s3, st, act, o_r, o_n, m, p_dgh, p_dgx, H,
               G: tl.constexpr, WRITE_DGX: tl.constexpr, CARRY: tl.constexpr, INTERP: tl.constexpr):
    """One tile's pointwise backward step: stores d_gh (and d_gx); returns the h-side gate
    gradients, the part of dh_{t-1} that bypasses W_hh, and dc_{t-1}. Inactive rows give
    exact zeros and pass dh, dc through: nothing computed from a padded step leaks."""
    d0, d1, d2, d3, d2h, dh_direct, dc_prev = cell_bwd(CELL, dh + dy, dc, s0, s1, s2, s3, st)
    a = act[None, :]
    if CARRY:  # units past H too: here the gate gradients are the next product's operand
        a = a & m
    d0 = tl.where(a, d0, 0.0)
    d1 = tl.where(a, d1, 0.0)
    d2 = tl.where(a, d2, 0.0)
    d3 = tl.where(a, d3, 0.0)
    d2h = tl.where(a, d2h, 0.0)
    o_rg = o_r * (G * H)
    store_slots(p_dgh, o_rg, o_n, m, H, G, d0, d1, d2h, d3, INTERP)
    if WRITE_DGX:
        store_slots(p_dgx, o_rg, o_n, m, H, G, d0, d1, d2, d3, INTERP)
    return d0, d1, d2h, d3, tl.where(a, dh_direct, dh), tl.where(a, dc_prev, dc)


@triton.jit
def program_rows(p_len, p_sync, flags, T, B, H, BLOCK_B: tl.constexpr):
    """This program's batch rows and barrier: the runtime flags (has_bias, has_len, reverse,
    save), o_b (BLOCK_B,) rows and their mask, each row's length, the row offsets into
    (B, H), the batch tile's barrier counter and the timeout flag."""
    has_bias, has_len, reverse, save = (flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0, (flags & 8) != 0
    i_b = tl.program_id(1)
    o_b = i_b * BLOCK_B + tl.arange(0, BLOCK_B)
    m_b = o_b < B
    b_len = tl.where(has_len, tl.load(p_len + o_b, mask=m_b & has_len, other=0), T)
    o_rh = o_b.to(tl.int64) * H
    return has_bias, reverse, save, o_b, m_b, b_len, o_rh, p_sync + i_b, p_sync + tl.num_programs(1)


@triton.jit
def unit_tile(tile, o_rh, m_b, H, BLOCK_N: tl.constexpr):
    """Units of tile number `tile`: o_n (BLOCK_N,), the (BLOCK_N, BLOCK_B) mask and offsets into (B, H)."""
    o_n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    return o_n, (o_n < H)[:, None] & m_b[None, :], o_rh[None, :] + o_n[:, None]


@triton.jit(do_not_specialize=["T", "flags", "spin_limit"])
def recurrence_fwd_kernel(
    p_gx,     # (T, B, G*H) input projection x W_ihᵀ + b_ih, input dtype
    p_w,      # (G*H, H) W_hh, input dtype
    p_bias,   # (G*H,) b_hh, input dtype (read only if has_bias)
    p_len,    # (B,) int32 lengths (read only if has_len)
    p_y,      # (T, B, H) out, input dtype
    p_h,      # (2, B, H) fp32: [0] = h0 on entry, [T % 2] = hT on exit; the exchange buffer
    p_c,      # (B, H) fp32 LSTM cell state: c0 on entry, cT on exit (unused by other cells)
    p_acts,   # (T, B, SA*H) fp32 saved activations (written if save)
    p_state,  # (T, B, H) fp32 saved state entering each step: LSTM c, GRU h (written if save)
    p_sync,   # (cdiv(B, BLOCK_B) + 1,) int32 zeros: a barrier counter per batch tile, then the timeout flag
    T, B, H,
    flags,  # runtime bits: HAS_BIAS 1, HAS_LEN 2, REVERSE 4, SAVE 8 (launch.FLAG_*)
    spin_limit,  # barrier polls per step before the wait gives up (latched)
    CELL: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, KP: tl.constexpr, NKP: tl.constexpr,
    N_TILES: tl.constexpr, RESIDENT: tl.constexpr, CARRY: tl.constexpr, BARRIER: tl.constexpr,
    PREC: tl.constexpr, INTERP: tl.constexpr,
):
    G: tl.constexpr = 4 if CELL == 0 else 3 if CELL == 1 else 1
    GS: tl.constexpr = 1 if G == 1 else 4
    SA: tl.constexpr = 1 if G == 1 else 4
    has_bias, reverse, save, o_b, m_b, b_len, o_rh, p_cnt, p_err = program_rows(p_len, p_sync, flags, T, B, H,
                                                                                 BLOCK_B)
    i_n, n_sync = tl.program_id(0), tl.num_programs(0)
    budget = spin_limit
    zero = tl.zeros((GS * BLOCK_N, BLOCK_B), tl.float32)
    if N_TILES == 1:
        n0 = i_n * BLOCK_N
        o_n, m, o_tile = unit_tile(i_n, o_rh, m_b, H, BLOCK_N)
        h = tl.load(p_h + o_tile, mask=m, other=0.0)
        c = h
        if CELL == 0:
            c = tl.load(p_c + o_tile, mask=m, other=0.0)
        bias = stacked_rows(p_bias, n0, H, G, GS, BLOCK_N, has_bias)
        ws = 0
        if RESIDENT:
            ws = resident_w_fwd(p_w, n0, H, G, GS, BLOCK_N, KP, NKP)
        o_r, act = step_rows(0, b_len, o_b, m_b, B, reverse)
        x0, x1, x2, x3 = load_slots(p_gx, o_r * (G * H), o_n, m, H, G)
        for s in range(T):
            o_r, act = step_rows(s, b_len, o_b, m_b, B, reverse)
            if CARRY:  # the whole state is this tile: it is the product's operand as it is
                acc = mma(ws[0], h, zero, PREC, INTERP)
            else:
                acc = contract_fwd(zero, p_h + (s % 2) * B * H, o_rh, m_b, p_w, ws, n0, H, G, GS, BLOCK_N, KP, NKP,
                                   RESIDENT, PREC, INTERP)
            h, c = fwd_update(CELL, acc, bias, x0, x1, x2, x3, h, c, act, o_r, o_n, m, p_y, p_acts, p_state, H,
                              save, GS, SA, BLOCK_N, BLOCK_B, CARRY, INTERP)
            # the next step's input does not depend on h: load it before the wait
            o_r1, _ = step_rows(s + 1, b_len, o_b, m_b, B, reverse)
            x0, x1, x2, x3 = load_slots(p_gx, o_r1 * (G * H), o_n, m & (s + 1 < T), H, G)
            if not CARRY:
                tl.store(p_h + ((s + 1) % 2) * B * H + o_tile, h, mask=m)
                budget = sync(p_cnt, p_err, (s + 1) * n_sync, budget, BARRIER)
        tl.store(p_h + (T % 2) * B * H + o_tile, h, mask=m)
        if CELL == 0:
            tl.store(p_c + o_tile, c, mask=m)
    else:
        for s in range(T):
            o_r, act = step_rows(s, b_len, o_b, m_b, B, reverse)
            p_hcur = p_h + (s % 2) * B * H
            for j in range(N_TILES):
                n0 = (i_n * N_TILES + j) * BLOCK_N
                o_n, m, o_tile = unit_tile(i_n * N_TILES + j, o_rh, m_b, H, BLOCK_N)
                h = tl.load(p_hcur + o_tile, mask=m, other=0.0, cache_modifier=".cg")
                c = h
                if CELL == 0:
                    c = tl.load(p_c + o_tile, mask=m, other=0.0)
                x0, x1, x2, x3 = load_slots(p_gx, o_r * (G * H), o_n, m, H, G)
                acc = contract_fwd(zero, p_hcur, o_rh, m_b, p_w, 0, n0, H, G, GS, BLOCK_N, KP, NKP, False, PREC,
                                   INTERP)
                h, c = fwd_update(CELL, acc, stacked_rows(p_bias, n0, H, G, GS, BLOCK_N, has_bias), x0, x1, x2, x3,
                                  h, c, act, o_r, o_n, m, p_y, p_acts, p_state, H, save, GS, SA, BLOCK_N, BLOCK_B,
                                  False, INTERP)
                tl.store(p_h + ((s + 1) % 2) * B * H + o_tile, h, mask=m)
                if CELL == 0:
                    tl.store(p_c + o_tile, c, mask=m)
            budget = sync(p_cnt, p_err, (s + 1) * n_sync, budget, BARRIER)


@triton.jit(do_not_specialize=["T", "flags", "spin_limit"])
def recurrence_bwd_kernel(
    p_dy,     # (T, B, H) gradient of y, input dtype
    p_w,      # (G*H, H) W_hh, input dtype
    p_len,    # (B,) int32 lengths (read only if has_len)
    p_acts,   # (T, B, SA*H) fp32 saved activations
    p_state,  # (T, B, H) fp32 saved state entering each step (LSTM c, GRU h)
    p_dgh,    # (T, B, G*H) fp32 out: gradients of the pre-activations fed by h W_hhᵀ + b_hh; the exchange
    p_dgx,    # (T, B, G*H) out, input dtype: those fed by gx (written with WRITE_DGX)
    p_dh,     # (B, H) fp32: dhT on entry, dh0 on exit
    p_dc,     # (B, H) fp32 LSTM: dcT on entry, dc0 on exit
    p_sync,   # (cdiv(B, BLOCK_B) + 1,) int32 zeros: a barrier counter per batch tile, then the timeout flag
    T, B, H,
    flags,  # runtime bits: HAS_LEN 2, REVERSE 4 (launch.FLAG_*)
    spin_limit,  # barrier polls per step before the wait gives up (latched)
    CELL: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, KP: tl.constexpr, NKP: tl.constexpr,
    N_TILES: tl.constexpr, RESIDENT: tl.constexpr, CARRY: tl.constexpr, BARRIER: tl.constexpr,
    WRITE_DGX: tl.constexpr, PREC: tl.constexpr, INTERP: tl.constexpr,
):
    G: tl.constexpr = 4 if CELL == 0 else 3 if CELL == 1 else 1
    SA: tl.constexpr = 1 if G == 1 else 4
    _, reverse, _, o_b, m_b, b_len, o_rh, p_cnt, p_err = program_rows(p_len, p_sync, flags, T, B, H, BLOCK_B)
    i_n, n_sync = tl.program_id(0), tl.num_programs(0)
    budget = spin_limit
    if N_TILES == 1:
        o_n, m, o_tile = unit_tile(i_n, o_rh, m_b, H, BLOCK_N)
        dh = tl.load(p_dh + o_tile, mask=m, other=0.0)
        dc = dh
        if CELL == 0:
            dc = tl.load(p_dc + o_tile, mask=m, other=0.0)
        ws = 0
        if RESIDENT:
            ws = resident_w_bwd(p_w, o_n, H, G, KP, NKP)
        dy, s0, s1, s2, s3, st = bwd_saved(p_dy, p_acts, p_state, T - 1, b_len, o_b, m_b, o_n, m, B, H, reverse,
                                           CELL, SA)
        for r in range(T):
            s = T - 1 - r
            o_r, act = step_rows(s, b_len, o_b, m_b, B, reverse)
            d0, d1, d2, d3, dh, dc = bwd_update(CELL, dh, dc, dy, s0, s1, s2, s3, st, act, o_r, o_n, m, p_dgh, p_dgx,
                                                H, G, WRITE_DGX, CARRY, INTERP)
            # the next step's saved values do not depend on dh: load them before the wait
            dy, s0, s1, s2, s3, st = bwd_saved(p_dy, p_acts, p_state, s - 1, b_len, o_b, m_b, o_n, m, B, H, reverse,
                                               CELL, SA)
            if CARRY:  # the gate gradients of all units are this tile: the product's operands as they are
                dh = mma(ws[0], d0, dh, PREC, INTERP)
                if G > 1:
                    dh = mma(ws[1], d1, dh, PREC, INTERP)
                    dh = mma(ws[2], d2, dh, PREC, INTERP)
                if G > 3:
                    dh = mma(ws[3], d3, dh, PREC, INTERP)
            else:
                budget = sync(p_cnt, p_err, (r + 1) * n_sync, budget, BARRIER)
                dh = contract_bwd(dh, p_dgh, o_r * (G * H), m_b, p_w, ws, o_n, H, G, KP, NKP, RESIDENT, PREC, INTERP)
        tl.store(p_dh + o_tile, dh, mask=m)
        if CELL == 0:
            tl.store(p_dc + o_tile, dc, mask=m)
    else:
        for r in range(T):
            s = T - 1 - r
            o_r, act = step_rows(s, b_len, o_b, m_b, B, reverse)
            for j in range(N_TILES):  # pointwise: d_gates of the program's units
                o_n, m, o_tile = unit_tile(i_n * N_TILES + j, o_rh, m_b, H, BLOCK_N)
                dh = tl.load(p_dh + o_tile, mask=m, other=0.0)
                dc = dh
                if CELL == 0:
                    dc = tl.load(p_dc + o_tile, mask=m, other=0.0)
                dy, s0, s1, s2, s3, st = bwd_saved(p_dy, p_acts, p_state, s, b_len, o_b, m_b, o_n, m, B, H, reverse,
                                                   CELL, SA)
                d0, d1, d2, d3, dh, dc = bwd_update(CELL, dh, dc, dy, s0, s1, s2, s3, st, act, o_r, o_n, m, p_dgh,
                                                    p_dgx, H, G, WRITE_DGX, False, INTERP)
                tl.store(p_dh + o_tile, dh, mask=m)
                if CELL == 0:
                    tl.store(p_dc + o_tile, dc, mask=m)
            budget = sync(p_cnt, p_err, (r + 1) * n_sync, budget, BARRIER)
            for j in range(N_TILES):  # contraction: dh_{t-1} of the program's units
                o_n, m, o_tile = unit_tile(i_n * N_TILES + j, o_rh, m_b, H, BLOCK_N)
                dh = tl.load(p_dh + o_tile, mask=m, other=0.0)
                dh = contract_bwd(dh, p_dgh, o_r * (G * H), m_b, p_w, 0, o_n, H, G, KP, NKP, False, PREC, INTERP)
                tl.store(p_dh + o_tile, dh, mask=m)
            tl.debug_barrier()  # the next step's pointwise part reads dh across threads
