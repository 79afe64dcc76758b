"""Fused vanilla-RNN recurrence (tanh or relu): forward and backward kernels and launchers.

Dimensions
    T        time steps (the loop inside the kernels)
    B        batch;  BLOCK_B rows of it per program (grid axis 1)
    H        hidden units; BLOCK_N of them per tile, N_TILES tiles per program (grid axis 0)
    G = 1    one pre-activation per unit
    BLOCK_K  chunk of the contraction over H (== padded H when W_hh is RESIDENT)

Forward: h_t = act(gx_t + h_{t-1} W_hhᵀ + b_hh), act = tanh or relu; the fp32 h_t is
saved for the backward (y may be 16-bit). Backward: d_pre = dh_t act'(h_t),
dh_{t-1} = d_pre W_hh[:, units].
"""
import torch
import triton
import triton.language as tl

from . import config
from .shared import load_f32, load_w_cols, load_w_rows, mma, step_rows, sync, tanh, to_out

G = 1
NG = tl.constexpr(G)  # the same, readable inside kernels


@triton.jit
def rnn_fwd_kernel(
    p_gx,    # (T, B, H) input projection x W_ihᵀ + b_ih, input dtype
    p_w,     # (H, H) W_hh, input dtype
    p_bias,  # (H,) b_hh, input dtype (not read without HAS_BIAS)
    p_len,   # (B,) int32 lengths (not read without HAS_LEN)
    p_y,     # (T, B, H) output, input dtype
    p_hbuf,  # (2, B, H) fp32; [0] holds h0 on entry, [T % 2] holds hT on exit
    p_hout,  # (T, B, H) fp32 saved h_t (written with SAVE)
    p_cnt,   # (cdiv(B, BLOCK_B) + 1,) int32 barrier counter per batch tile + timeout flag, zeros
    T, B, H,
    RELU: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_LEN: tl.constexpr, REVERSE: tl.constexpr,
    SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, N_TILES: tl.constexpr,
    RESIDENT: tl.constexpr, BARRIER: tl.constexpr, SPIN_LIMIT: tl.constexpr, INTERP: tl.constexpr,
):
    i_n, i_b = tl.program_id(0), tl.program_id(1)
    n_n = tl.num_programs(0)
    o_b = i_b * BLOCK_B + tl.arange(0, BLOCK_B)
    m_b = o_b < B
    o_k = tl.arange(0, BLOCK_K)
    o_rh = o_b.to(tl.int64) * H
    p_err = p_cnt + tl.num_programs(1)
    p_cnt += i_b
    if RESIDENT:
        o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
        b_w = load_w_rows(p_w, o_n, o_k, H, o_n < H)  # (BLOCK_K, BLOCK_N)
    for s in range(T):
        o_t, act = step_rows(s, T, p_len, o_b, m_b, HAS_LEN, REVERSE)
        o_ry = (o_t * B + o_b) * H  # row offsets into (T, B, H)
        p_hcur = p_hbuf + (s % 2) * B * H
        p_hnxt = p_hbuf + ((s + 1) % 2) * B * H
        for j in range(N_TILES):
            o_n = (i_n * N_TILES + j) * BLOCK_N + tl.arange(0, BLOCK_N)
            m_n = o_n < H
            m = m_b[:, None] & m_n[None, :]
            acc = load_f32(p_gx, o_ry, o_n, m)
            if RESIDENT:
                acc = mma(load_f32(p_hcur, o_rh, o_k, m_b[:, None] & (o_k < H)[None, :]), b_w, acc, INTERP)
            else:
                for k0 in range(0, H, BLOCK_K):
                    o_kk = k0 + o_k
                    b_h = load_f32(p_hcur, o_rh, o_kk, m_b[:, None] & (o_kk < H)[None, :])
                    acc = mma(b_h, load_w_rows(p_w, o_n, o_kk, H, m_n), acc, INTERP)
            if HAS_BIAS:
                acc += tl.load(p_bias + o_n, mask=m_n, other=0.0).to(tl.float32)[None, :]
            if RELU:
                b_hn = tl.where(acc < 0.0, 0.0, acc)  # NaN passes through, as torch.relu
            else:
                b_hn = tanh(acc)
            b_hprev = load_f32(p_hcur, o_rh, o_n, m)
            a2 = act[:, None]
            tl.store(p_y + o_ry[:, None] + o_n[None, :], to_out(tl.where(a2, b_hn, 0.0), p_y, INTERP), mask=m)
            tl.store(p_hnxt + o_rh[:, None] + o_n[None, :], tl.where(a2, b_hn, b_hprev), mask=m)
            if SAVE:
                tl.store(p_hout + o_ry[:, None] + o_n[None, :], b_hn, mask=m)
        sync(p_cnt, p_err, (s + 1) * n_n, BARRIER, SPIN_LIMIT)


@triton.jit
def rnn_bwd_kernel(
    p_dy,    # (T, B, H) gradient of y, input dtype
    p_w,     # (H, H) W_hh, input dtype
    p_len,   # (B,) int32 lengths (not read without HAS_LEN)
    p_hout,  # (T, B, H) fp32 saved h_t
    p_dgh,   # (T, B, H) fp32 out: pre-activation gradients (also the exchange buffer)
    p_dgx,   # (T, B, H) out in input dtype (written with WRITE_DGX; else p_dgh is returned)
    p_dh,    # (B, H) fp32: dhT on entry, dh0 on exit
    p_cnt,   # (cdiv(B, BLOCK_B) + 1,) int32 barrier counter per batch tile + timeout flag, zeros
    T, B, H,
    RELU: tl.constexpr, HAS_LEN: tl.constexpr, REVERSE: tl.constexpr, WRITE_DGX: tl.constexpr,
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
    if RESIDENT:
        o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
        b_w = load_w_cols(p_w, o_k, o_n, H, m_k, o_n < H)  # (BLOCK_K, BLOCK_N)
    for r in range(T):
        s = T - 1 - r
        o_t, act = step_rows(s, T, p_len, o_b, m_b, HAS_LEN, REVERSE)
        o_ry = (o_t * B + o_b) * H
        a2 = act[:, None]
        for j in range(N_TILES):
            o_n = (i_n * N_TILES + j) * BLOCK_N + tl.arange(0, BLOCK_N)
            m = m_b[:, None] & (o_n < H)[None, :]
            b_dh = load_f32(p_dh, o_rh, o_n, m)
            b_dht = b_dh + load_f32(p_dy, o_ry, o_n, m)
            b_h = load_f32(p_hout, o_ry, o_n, m)
            if RELU:  # as torch's threshold_backward: a NaN output passes the gradient on
                d_pre = tl.where(b_h <= 0.0, 0.0, b_dht)
            else:
                d_pre = b_dht * (1.0 - b_h * b_h)
            d_pre = tl.where(a2, d_pre, 0.0)
            tl.store(p_dgh + o_ry[:, None] + o_n[None, :], d_pre, mask=m)
            if WRITE_DGX:
                tl.store(p_dgx + o_ry[:, None] + o_n[None, :], to_out(d_pre, p_dgx, INTERP), mask=m)
            tl.store(p_dh + o_rh[:, None] + o_n[None, :], tl.where(a2, 0.0, b_dh), mask=m)
        sync(p_cnt, p_err, (r + 1) * n_n, BARRIER, SPIN_LIMIT)
        for j in range(N_TILES):
            o_n = (i_n * N_TILES + j) * BLOCK_N + tl.arange(0, BLOCK_N)
            m_n = o_n < H
            m = m_b[:, None] & m_n[None, :]
            acc = load_f32(p_dh, o_rh, o_n, m)
            if RESIDENT:
                acc = mma(load_f32(p_dgh, o_ry, o_k, m_b[:, None] & m_k[None, :]), b_w, acc, INTERP)
            else:
                for k0 in range(0, H, BLOCK_K):
                    o_kk = k0 + o_k
                    m_kk = o_kk < H
                    acc = mma(load_f32(p_dgh, o_ry, o_kk, m_b[:, None] & m_kk[None, :]),
                              load_w_cols(p_w, o_kk, o_n, H, m_kk, m_n), acc, INTERP)
            tl.store(p_dh + o_rh[:, None] + o_n[None, :], acc, mask=m)
        tl.debug_barrier()


def saved_shapes(T, B, H):
    return [((T, B, H), torch.float32)]


def rnn_fwd(gx, h0, w_hh, b_hh, lengths, reverse, need_grad, relu):
    """Launch the forward; returns y (T,B,H), hT (B,H), saved (h_out,)."""
    T, B, H = gx.shape
    dev = gx.device
    launch = config.choose(G, B, H, gx.dtype, dev)
    y = config.new_out((T, B, H), gx.dtype, dev)
    hbuf = torch.empty(2, B, H, dtype=torch.float32, device=dev)
    hbuf[0].copy_(h0)
    saved = tuple(config.new_out(s, d, dev) for s, d in saved_shapes(T, B, H)) if need_grad else ()
    cnt = config.counters(launch, dev)
    rnn_fwd_kernel[launch.grid](
        gx, w_hh, b_hh if b_hh is not None else gx, lengths if lengths is not None else gx,
        y, hbuf, saved[0] if need_grad else y, cnt, T, B, H,
        RELU=relu, HAS_BIAS=b_hh is not None, HAS_LEN=lengths is not None, REVERSE=reverse,
        SAVE=need_grad, **config.kernel_args(launch))
    config.check_barrier(launch, cnt)
    return y, hbuf[T % 2].to(gx.dtype, copy=True), saved


def rnn_bwd(dy, dhT, gx, w_hh, lengths, reverse, saved, relu):
    """Launch the backward; returns d_gx (T,B,H) in gx's dtype, d_gh (T,B,H) fp32, dh0."""
    T, B, H = gx.shape
    dev = gx.device
    launch = config.choose(G, B, H, gx.dtype, dev)
    d_gh = config.new_out((T, B, H), torch.float32, dev)
    write_dgx = gx.dtype != torch.float32
    d_gx = config.new_out((T, B, H), gx.dtype, dev) if write_dgx else d_gh
    dh = dhT.to(torch.float32, copy=True)
    cnt = config.counters(launch, dev)
    rnn_bwd_kernel[launch.grid](
        dy, w_hh, lengths if lengths is not None else gx, saved[0], d_gh, d_gx, dh,
        cnt, T, B, H,
        RELU=relu, HAS_LEN=lengths is not None, REVERSE=reverse, WRITE_DGX=write_dgx,
        **config.kernel_args(launch))
    config.check_barrier(launch, cnt)
    return d_gx, d_gh, dh.to(gx.dtype)
