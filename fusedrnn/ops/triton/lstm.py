"""Fused LSTM recurrence: forward and backward kernels and their launchers.

Dimensions
    T        time steps (the loop inside the kernels)
    B        batch;  BLOCK_B rows of it per program (grid axis 1)
    H        hidden units; BLOCK_N of them per tile, N_TILES tiles per program (grid axis 0)
    G = 4    gates i, f, g, o in torch.nn's order; gate k of unit n is column k*H + n
    BLOCK_K  chunk of the contraction over H (== padded H when W_hh is RESIDENT)

Forward step (fp32 state, c kept in fp32):
    [i f g o] = gx_t + h_{t-1} W_hhᵀ + b_hh;  c_t = σf c_{t-1} + σi tanh g;  h_t = σo tanh c_t
Each program owns all four gates of its hidden units, so only h_t is exchanged, through
the fp32 buffer hbuf (double-buffered by step parity), then one sync per step.
Backward step (reverse order): the pointwise part gives d_gates for the program's units;
after one sync, dh_{t-1} for its units is Σ_g d_gates_g W_hh[g*H:(g+1)*H, units].
"""
import torch
import triton
import triton.language as tl

from . import config
from .shared import load_f32, load_w_cols, load_w_rows, mma, sigmoid, step_rows, sync, tanh, to_out

G = 4
NG = tl.constexpr(G)  # the same, readable inside kernels


@triton.jit
def lstm_fwd_kernel(
    p_gx,    # (T, B, 4H) input projection x W_ihᵀ + b_ih, input dtype
    p_w,     # (4H, H) W_hh, input dtype
    p_bias,  # (4H,) b_hh, input dtype (not read without HAS_BIAS)
    p_len,   # (B,) int32 lengths (not read without HAS_LEN)
    p_y,     # (T, B, H) output, input dtype
    p_hbuf,  # (2, B, H) fp32; [0] holds h0 on entry, [T % 2] holds hT on exit
    p_cbuf,  # (B, H) fp32 cell state: c0 on entry, cT on exit
    p_acts,  # (T, B, 4H) fp32 saved σi, σf, tanh g, σo (written with SAVE)
    p_cin,   # (T, B, H) fp32 saved cell state entering each step (written with SAVE)
    p_cnt,   # (cdiv(B, BLOCK_B) + 1,) int32 barrier counter per batch tile + timeout flag, zeros
    T, B, H,
    HAS_BIAS: tl.constexpr, HAS_LEN: tl.constexpr, REVERSE: tl.constexpr, SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, N_TILES: tl.constexpr,
    RESIDENT: tl.constexpr, BARRIER: tl.constexpr, SPIN_LIMIT: tl.constexpr, INTERP: tl.constexpr,
):
    i_n, i_b = tl.program_id(0), tl.program_id(1)
    n_n = tl.num_programs(0)
    o_b = i_b * BLOCK_B + tl.arange(0, BLOCK_B)
    m_b = o_b < B
    o_k = tl.arange(0, BLOCK_K)
    o_rh = o_b.to(tl.int64) * H  # row offsets into (B, H)
    p_err = p_cnt + tl.num_programs(1)
    p_cnt += i_b
    if RESIDENT:  # one tile, one K chunk: this program's slice of W_hh stays on chip for all T steps
        o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_n = o_n < H
        b_wi = load_w_rows(p_w, 0 * H + o_n, o_k, H, m_n)  # (BLOCK_K, BLOCK_N)
        b_wf = load_w_rows(p_w, 1 * H + o_n, o_k, H, m_n)
        b_wg = load_w_rows(p_w, 2 * H + o_n, o_k, H, m_n)
        b_wo = load_w_rows(p_w, 3 * H + o_n, o_k, H, m_n)
    for s in range(T):
        o_t, act = step_rows(s, T, p_len, o_b, m_b, HAS_LEN, REVERSE)
        o_rg = (o_t * B + o_b) * (NG * H)  # row offsets into (T, B, 4H)
        o_ry = (o_t * B + o_b) * H        # row offsets into (T, B, H)
        p_hcur = p_hbuf + (s % 2) * B * H
        p_hnxt = p_hbuf + ((s + 1) % 2) * B * H
        for j in range(N_TILES):
            o_n = (i_n * N_TILES + j) * BLOCK_N + tl.arange(0, BLOCK_N)
            m_n = o_n < H
            m = m_b[:, None] & m_n[None, :]
            acc_i = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
            acc_f = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
            acc_g = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
            acc_o = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
            if RESIDENT:
                b_h = load_f32(p_hcur, o_rh, o_k, m_b[:, None] & (o_k < H)[None, :])
                acc_i = mma(b_h, b_wi, acc_i, INTERP)
                acc_f = mma(b_h, b_wf, acc_f, INTERP)
                acc_g = mma(b_h, b_wg, acc_g, INTERP)
                acc_o = mma(b_h, b_wo, acc_o, INTERP)
            else:  # W_hh streamed from L2 in BLOCK_K chunks
                for k0 in range(0, H, BLOCK_K):
                    o_kk = k0 + o_k
                    b_h = load_f32(p_hcur, o_rh, o_kk, m_b[:, None] & (o_kk < H)[None, :])
                    acc_i = mma(b_h, load_w_rows(p_w, 0 * H + o_n, o_kk, H, m_n), acc_i, INTERP)
                    acc_f = mma(b_h, load_w_rows(p_w, 1 * H + o_n, o_kk, H, m_n), acc_f, INTERP)
                    acc_g = mma(b_h, load_w_rows(p_w, 2 * H + o_n, o_kk, H, m_n), acc_g, INTERP)
                    acc_o = mma(b_h, load_w_rows(p_w, 3 * H + o_n, o_kk, H, m_n), acc_o, INTERP)
            acc_i += load_f32(p_gx, o_rg, 0 * H + o_n, m)
            acc_f += load_f32(p_gx, o_rg, 1 * H + o_n, m)
            acc_g += load_f32(p_gx, o_rg, 2 * H + o_n, m)
            acc_o += load_f32(p_gx, o_rg, 3 * H + o_n, m)
            if HAS_BIAS:
                acc_i += tl.load(p_bias + 0 * H + o_n, mask=m_n, other=0.0).to(tl.float32)[None, :]
                acc_f += tl.load(p_bias + 1 * H + o_n, mask=m_n, other=0.0).to(tl.float32)[None, :]
                acc_g += tl.load(p_bias + 2 * H + o_n, mask=m_n, other=0.0).to(tl.float32)[None, :]
                acc_o += tl.load(p_bias + 3 * H + o_n, mask=m_n, other=0.0).to(tl.float32)[None, :]
            b_i, b_f, b_g, b_o = sigmoid(acc_i), sigmoid(acc_f), tanh(acc_g), sigmoid(acc_o)
            b_c = load_f32(p_cbuf, o_rh, o_n, m)
            b_hprev = load_f32(p_hcur, o_rh, o_n, m)
            b_cn = b_f * b_c + b_i * b_g
            b_hn = b_o * tanh(b_cn)
            a2 = act[:, None]
            tl.store(p_y + o_ry[:, None] + o_n[None, :], to_out(tl.where(a2, b_hn, 0.0), p_y, INTERP), mask=m)
            tl.store(p_hnxt + o_rh[:, None] + o_n[None, :], tl.where(a2, b_hn, b_hprev), mask=m)
            tl.store(p_cbuf + o_rh[:, None] + o_n[None, :], tl.where(a2, b_cn, b_c), mask=m)
            if SAVE:
                p_a = p_acts + o_rg[:, None] + o_n[None, :]
                tl.store(p_a + 0 * H, b_i, mask=m)
                tl.store(p_a + 1 * H, b_f, mask=m)
                tl.store(p_a + 2 * H, b_g, mask=m)
                tl.store(p_a + 3 * H, b_o, mask=m)
                tl.store(p_cin + o_ry[:, None] + o_n[None, :], b_c, mask=m)
        sync(p_cnt, p_err, (s + 1) * n_n, BARRIER, SPIN_LIMIT)


@triton.jit
def lstm_bwd_kernel(
    p_dy,    # (T, B, H) gradient of y, input dtype
    p_w,     # (4H, H) W_hh, input dtype
    p_len,   # (B,) int32 lengths (not read without HAS_LEN)
    p_acts,  # (T, B, 4H) fp32 saved σi, σf, tanh g, σo
    p_cin,   # (T, B, H) fp32 saved cell state entering each step
    p_dgh,   # (T, B, 4H) fp32 out: pre-activation gradients (also the exchange buffer)
    p_dgx,   # (T, B, 4H) out in input dtype (written with WRITE_DGX; else p_dgh is returned)
    p_dh,    # (B, H) fp32: dhT on entry, dh0 on exit
    p_dc,    # (B, H) fp32: dcT on entry, dc0 on exit
    p_cnt,   # (cdiv(B, BLOCK_B) + 1,) int32 barrier counter per batch tile + timeout flag, zeros
    T, B, H,
    HAS_LEN: tl.constexpr, REVERSE: tl.constexpr, WRITE_DGX: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, N_TILES: tl.constexpr,
    RESIDENT: tl.constexpr, BARRIER: tl.constexpr, SPIN_LIMIT: tl.constexpr, INTERP: tl.constexpr,
):
    i_n, i_b = tl.program_id(0), tl.program_id(1)
    n_n = tl.num_programs(0)
    o_b = i_b * BLOCK_B + tl.arange(0, BLOCK_B)
    m_b = o_b < B
    o_k = tl.arange(0, BLOCK_K)
    m_k = o_k < H
    o_rh = o_b.to(tl.int64) * H
    p_err = p_cnt + tl.num_programs(1)
    p_cnt += i_b
    if RESIDENT:  # columns of W_hh for this program's units, on chip for all T steps
        o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_n = o_n < H
        b_wi = load_w_cols(p_w, 0 * H + o_k, o_n, H, m_k, m_n)  # (BLOCK_K, BLOCK_N)
        b_wf = load_w_cols(p_w, 1 * H + o_k, o_n, H, m_k, m_n)
        b_wg = load_w_cols(p_w, 2 * H + o_k, o_n, H, m_k, m_n)
        b_wo = load_w_cols(p_w, 3 * H + o_k, o_n, H, m_k, m_n)
    for r in range(T):
        s = T - 1 - r
        o_t, act = step_rows(s, T, p_len, o_b, m_b, HAS_LEN, REVERSE)
        o_rg = (o_t * B + o_b) * (NG * H)
        o_ry = (o_t * B + o_b) * H
        a2 = act[:, None]
        # pointwise: d_gates of this program's units; dh keeps only what bypasses W_hh
        for j in range(N_TILES):
            o_n = (i_n * N_TILES + j) * BLOCK_N + tl.arange(0, BLOCK_N)
            m = m_b[:, None] & (o_n < H)[None, :]
            b_dh = load_f32(p_dh, o_rh, o_n, m)
            b_dc = load_f32(p_dc, o_rh, o_n, m)
            b_dht = b_dh + load_f32(p_dy, o_ry, o_n, m)
            b_i = load_f32(p_acts, o_rg, 0 * H + o_n, m)
            b_f = load_f32(p_acts, o_rg, 1 * H + o_n, m)
            b_g = load_f32(p_acts, o_rg, 2 * H + o_n, m)
            b_o = load_f32(p_acts, o_rg, 3 * H + o_n, m)
            b_c = load_f32(p_cin, o_ry, o_n, m)
            b_tc = tanh(b_f * b_c + b_i * b_g)
            b_dct = b_dc + b_dht * b_o * (1.0 - b_tc * b_tc)
            d_i = tl.where(a2, b_dct * b_g * b_i * (1.0 - b_i), 0.0)
            d_f = tl.where(a2, b_dct * b_c * b_f * (1.0 - b_f), 0.0)
            d_g = tl.where(a2, b_dct * b_i * (1.0 - b_g * b_g), 0.0)
            d_o = tl.where(a2, b_dht * b_tc * b_o * (1.0 - b_o), 0.0)
            p_d = p_dgh + o_rg[:, None] + o_n[None, :]
            tl.store(p_d + 0 * H, d_i, mask=m)
            tl.store(p_d + 1 * H, d_f, mask=m)
            tl.store(p_d + 2 * H, d_g, mask=m)
            tl.store(p_d + 3 * H, d_o, mask=m)
            if WRITE_DGX:
                p_x = p_dgx + o_rg[:, None] + o_n[None, :]
                tl.store(p_x + 0 * H, to_out(d_i, p_dgx, INTERP), mask=m)
                tl.store(p_x + 1 * H, to_out(d_f, p_dgx, INTERP), mask=m)
                tl.store(p_x + 2 * H, to_out(d_g, p_dgx, INTERP), mask=m)
                tl.store(p_x + 3 * H, to_out(d_o, p_dgx, INTERP), mask=m)
            tl.store(p_dc + o_rh[:, None] + o_n[None, :], tl.where(a2, b_dct * b_f, b_dc), mask=m)
            tl.store(p_dh + o_rh[:, None] + o_n[None, :], tl.where(a2, 0.0, b_dh), mask=m)
        sync(p_cnt, p_err, (r + 1) * n_n, BARRIER, SPIN_LIMIT)
        # contraction: dh_{t-1}[units] += Σ_g d_gates_g W_hh[g-block, units] (rows past
        # their length have zero d_gates, so their dh passes through unchanged)
        for j in range(N_TILES):
            o_n = (i_n * N_TILES + j) * BLOCK_N + tl.arange(0, BLOCK_N)
            m_n = o_n < H
            m = m_b[:, None] & m_n[None, :]
            acc = load_f32(p_dh, o_rh, o_n, m)
            if RESIDENT:
                mk = m_b[:, None] & m_k[None, :]
                acc = mma(load_f32(p_dgh, o_rg, 0 * H + o_k, mk), b_wi, acc, INTERP)
                acc = mma(load_f32(p_dgh, o_rg, 1 * H + o_k, mk), b_wf, acc, INTERP)
                acc = mma(load_f32(p_dgh, o_rg, 2 * H + o_k, mk), b_wg, acc, INTERP)
                acc = mma(load_f32(p_dgh, o_rg, 3 * H + o_k, mk), b_wo, acc, INTERP)
            else:
                for k0 in range(0, H, BLOCK_K):
                    o_kk = k0 + o_k
                    m_kk = o_kk < H
                    mk = m_b[:, None] & m_kk[None, :]
                    for g in tl.static_range(NG):
                        acc = mma(load_f32(p_dgh, o_rg, g * H + o_kk, mk),
                                  load_w_cols(p_w, g * H + o_kk, o_n, H, m_kk, m_n), acc, INTERP)
            tl.store(p_dh + o_rh[:, None] + o_n[None, :], acc, mask=m)
        tl.debug_barrier()  # the next step's pointwise part reads dh across threads


def saved_shapes(T, B, H):
    return [((T, B, G * H), torch.float32), ((T, B, H), torch.float32)]


def lstm_fwd(gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
    """Launch the forward; returns y (T,B,H), hT (B,H), cT (B,H), saved (acts, c_in)."""
    T, B, GH = gx.shape
    H = GH // G
    dev = gx.device
    launch = config.choose(G, B, H, gx.dtype, dev)
    y = config.new_out((T, B, H), gx.dtype, dev)
    hbuf = torch.empty(2, B, H, dtype=torch.float32, device=dev)
    hbuf[0].copy_(h0)
    cbuf = c0.to(torch.float32, copy=True)
    saved = tuple(config.new_out(s, d, dev) for s, d in saved_shapes(T, B, H)) if need_grad else ()
    acts, c_in = saved if need_grad else (y, y)
    cnt = config.counters(launch, dev)
    lstm_fwd_kernel[launch.grid](
        gx, w_hh, b_hh if b_hh is not None else gx, lengths if lengths is not None else gx,
        y, hbuf, cbuf, acts, c_in, cnt, T, B, H,
        HAS_BIAS=b_hh is not None, HAS_LEN=lengths is not None, REVERSE=reverse, SAVE=need_grad,
        **config.kernel_args(launch))
    config.check_barrier(launch, cnt)
    return y, hbuf[T % 2].to(gx.dtype, copy=True), cbuf.to(gx.dtype, copy=True), saved


def lstm_bwd(dy, dhT, dcT, gx, w_hh, lengths, reverse, saved):
    """Launch the backward; returns d_gx (T,B,4H) in gx's dtype, d_gh (T,B,4H) fp32, dh0, dc0."""
    T, B, GH = gx.shape
    H = GH // G
    dev = gx.device
    acts, c_in = saved
    launch = config.choose(G, B, H, gx.dtype, dev)
    d_gh = config.new_out((T, B, GH), torch.float32, dev)
    write_dgx = gx.dtype != torch.float32
    d_gx = config.new_out((T, B, GH), gx.dtype, dev) if write_dgx else d_gh
    dh = dhT.to(torch.float32, copy=True)
    dc = dcT.to(torch.float32, copy=True)
    cnt = config.counters(launch, dev)
    lstm_bwd_kernel[launch.grid](
        dy, w_hh, lengths if lengths is not None else gx, acts, c_in, d_gh, d_gx, dh, dc,
        cnt, T, B, H,
        HAS_LEN=lengths is not None, REVERSE=reverse, WRITE_DGX=write_dgx, **config.kernel_args(launch))
    config.check_barrier(launch, cnt)
    return d_gx, d_gh, dh.to(gx.dtype), dc.to(gx.dtype)
