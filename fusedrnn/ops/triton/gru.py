"""Fused GRU recurrence: forward and backward kernels and their launchers.

Dimensions
    T        time steps (the loop inside the kernels)
    B        batch;  BLOCK_B rows of it per program (grid axis 1)
    H        hidden units; BLOCK_N of them per tile, N_TILES tiles per program (grid axis 0)
    G = 3    gates r, z, n in torch.nn's order; gate k of unit n is column k*H + n
    BLOCK_K  chunk of the contraction over H (== padded H when W_hh is RESIDENT)

Forward step (fp32 state), gh = h_{t-1} W_hhᵀ + b_hh kept apart from gx because of n:
    r = σ(gx_r + gh_r);  z = σ(gx_z + gh_z);  n = tanh(gx_n + r gh_n);  h_t = (1-z) n + z h_{t-1}
Backward: d_gx = [dr, dz, dn] feeds gx; d_gh = [dr, dz, r dn] feeds W_hh and b_hh, and
dh_{t-1} = z dh_t + Σ_g d_gh_g W_hh[g-block, units].
"""
import torch
import triton
import triton.language as tl

from . import config
from .shared import load_f32, load_w_cols, load_w_rows, mma, sigmoid, step_rows, sync, tanh, to_out

G = 3
NG = tl.constexpr(G)  # the same, readable inside kernels


@triton.jit
def gru_fwd_kernel(
    p_gx,    # (T, B, 3H) input projection x W_ihᵀ + b_ih, input dtype
    p_w,     # (3H, H) W_hh, input dtype
    p_bias,  # (3H,) b_hh, input dtype (not read without HAS_BIAS)
    p_len,   # (B,) int32 lengths (not read without HAS_LEN)
    p_y,     # (T, B, H) output, input dtype
    p_hbuf,  # (2, B, H) fp32; [0] holds h0 on entry, [T % 2] holds hT on exit
    p_acts,  # (T, B, 4H) fp32 saved r, z, n, gh_n (written with SAVE)
    p_hin,   # (T, B, H) fp32 saved state entering each step (written with SAVE)
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
    o_rh = o_b.to(tl.int64) * H
    p_err = p_cnt + tl.num_programs(1)
    p_cnt += i_b
    if RESIDENT:
        o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_n = o_n < H
        b_wr = load_w_rows(p_w, 0 * H + o_n, o_k, H, m_n)  # (BLOCK_K, BLOCK_N)
        b_wz = load_w_rows(p_w, 1 * H + o_n, o_k, H, m_n)
        b_wn = load_w_rows(p_w, 2 * H + o_n, o_k, H, m_n)
    for s in range(T):
        o_t, act = step_rows(s, T, p_len, o_b, m_b, HAS_LEN, REVERSE)
        o_rg = (o_t * B + o_b) * (NG * H)  # row offsets into (T, B, 3H)
        o_ra = (o_t * B + o_b) * (4 * H)  # row offsets into (T, B, 4H)
        o_ry = (o_t * B + o_b) * H
        p_hcur = p_hbuf + (s % 2) * B * H
        p_hnxt = p_hbuf + ((s + 1) % 2) * B * H
        for j in range(N_TILES):
            o_n = (i_n * N_TILES + j) * BLOCK_N + tl.arange(0, BLOCK_N)
            m_n = o_n < H
            m = m_b[:, None] & m_n[None, :]
            acc_r = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
            acc_z = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
            acc_n = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
            if RESIDENT:
                b_h = load_f32(p_hcur, o_rh, o_k, m_b[:, None] & (o_k < H)[None, :])
                acc_r = mma(b_h, b_wr, acc_r, INTERP)
                acc_z = mma(b_h, b_wz, acc_z, INTERP)
                acc_n = mma(b_h, b_wn, acc_n, INTERP)
            else:
                for k0 in range(0, H, BLOCK_K):
                    o_kk = k0 + o_k
                    b_h = load_f32(p_hcur, o_rh, o_kk, m_b[:, None] & (o_kk < H)[None, :])
                    acc_r = mma(b_h, load_w_rows(p_w, 0 * H + o_n, o_kk, H, m_n), acc_r, INTERP)
                    acc_z = mma(b_h, load_w_rows(p_w, 1 * H + o_n, o_kk, H, m_n), acc_z, INTERP)
                    acc_n = mma(b_h, load_w_rows(p_w, 2 * H + o_n, o_kk, H, m_n), acc_n, INTERP)
            if HAS_BIAS:
                acc_r += tl.load(p_bias + 0 * H + o_n, mask=m_n, other=0.0).to(tl.float32)[None, :]
                acc_z += tl.load(p_bias + 1 * H + o_n, mask=m_n, other=0.0).to(tl.float32)[None, :]
                acc_n += tl.load(p_bias + 2 * H + o_n, mask=m_n, other=0.0).to(tl.float32)[None, :]
            b_r = sigmoid(load_f32(p_gx, o_rg, 0 * H + o_n, m) + acc_r)
            b_z = sigmoid(load_f32(p_gx, o_rg, 1 * H + o_n, m) + acc_z)
            b_n = tanh(load_f32(p_gx, o_rg, 2 * H + o_n, m) + b_r * acc_n)
            b_hprev = load_f32(p_hcur, o_rh, o_n, m)
            b_hn = (1.0 - b_z) * b_n + b_z * b_hprev
            a2 = act[:, None]
            tl.store(p_y + o_ry[:, None] + o_n[None, :], to_out(tl.where(a2, b_hn, 0.0), p_y, INTERP), mask=m)
            tl.store(p_hnxt + o_rh[:, None] + o_n[None, :], tl.where(a2, b_hn, b_hprev), mask=m)
            if SAVE:
                p_a = p_acts + o_ra[:, None] + o_n[None, :]
                tl.store(p_a + 0 * H, b_r, mask=m)
                tl.store(p_a + 1 * H, b_z, mask=m)
                tl.store(p_a + 2 * H, b_n, mask=m)
                tl.store(p_a + 3 * H, acc_n, mask=m)
                tl.store(p_hin + o_ry[:, None] + o_n[None, :], b_hprev, mask=m)
        sync(p_cnt, p_err, (s + 1) * n_n, BARRIER, SPIN_LIMIT)


@triton.jit
def gru_bwd_kernel(
    p_dy,    # (T, B, H) gradient of y, input dtype
    p_w,     # (3H, H) W_hh, input dtype
    p_len,   # (B,) int32 lengths (not read without HAS_LEN)
    p_acts,  # (T, B, 4H) fp32 saved r, z, n, gh_n
    p_hin,   # (T, B, H) fp32 saved state entering each step
    p_dgh,   # (T, B, 3H) fp32 out: gradients of the pre-activations fed by h W_hhᵀ + b_hh
    p_dgx,   # (T, B, 3H) out in input dtype: gradients of those fed by gx
    p_dh,    # (B, H) fp32: dhT on entry, dh0 on exit
    p_cnt,   # (cdiv(B, BLOCK_B) + 1,) int32 barrier counter per batch tile + timeout flag, zeros
    T, B, H,
    HAS_LEN: tl.constexpr, REVERSE: tl.constexpr,
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
        m_n = o_n < H
        b_wr = load_w_cols(p_w, 0 * H + o_k, o_n, H, m_k, m_n)  # (BLOCK_K, BLOCK_N)
        b_wz = load_w_cols(p_w, 1 * H + o_k, o_n, H, m_k, m_n)
        b_wn = load_w_cols(p_w, 2 * H + o_k, o_n, H, m_k, m_n)
    for r in range(T):
        s = T - 1 - r
        o_t, act = step_rows(s, T, p_len, o_b, m_b, HAS_LEN, REVERSE)
        o_rg = (o_t * B + o_b) * (NG * H)
        o_ra = (o_t * B + o_b) * (4 * H)
        o_ry = (o_t * B + o_b) * H
        a2 = act[:, None]
        for j in range(N_TILES):
            o_n = (i_n * N_TILES + j) * BLOCK_N + tl.arange(0, BLOCK_N)
            m = m_b[:, None] & (o_n < H)[None, :]
            b_dh = load_f32(p_dh, o_rh, o_n, m)
            b_dht = b_dh + load_f32(p_dy, o_ry, o_n, m)
            b_r = load_f32(p_acts, o_ra, 0 * H + o_n, m)
            b_z = load_f32(p_acts, o_ra, 1 * H + o_n, m)
            b_n = load_f32(p_acts, o_ra, 2 * H + o_n, m)
            b_ghn = load_f32(p_acts, o_ra, 3 * H + o_n, m)
            b_hin = load_f32(p_hin, o_ry, o_n, m)
            d_n = tl.where(a2, b_dht * (1.0 - b_z) * (1.0 - b_n * b_n), 0.0)
            d_r = tl.where(a2, d_n * b_ghn * b_r * (1.0 - b_r), 0.0)  # stopgap: 0 * NaN at padded steps
            d_z = tl.where(a2, b_dht * (b_hin - b_n) * b_z * (1.0 - b_z), 0.0)
            p_d = p_dgh + o_rg[:, None] + o_n[None, :]
            tl.store(p_d + 0 * H, d_r, mask=m)
            tl.store(p_d + 1 * H, d_z, mask=m)
            tl.store(p_d + 2 * H, tl.where(a2, d_n * b_r, 0.0), mask=m)
            p_x = p_dgx + o_rg[:, None] + o_n[None, :]
            tl.store(p_x + 0 * H, to_out(d_r, p_dgx, INTERP), mask=m)
            tl.store(p_x + 1 * H, to_out(d_z, p_dgx, INTERP), mask=m)
            tl.store(p_x + 2 * H, to_out(d_n, p_dgx, INTERP), mask=m)
            tl.store(p_dh + o_rh[:, None] + o_n[None, :], tl.where(a2, b_dht * b_z, b_dh), mask=m)
        sync(p_cnt, p_err, (r + 1) * n_n, BARRIER, SPIN_LIMIT)
        for j in range(N_TILES):
            o_n = (i_n * N_TILES + j) * BLOCK_N + tl.arange(0, BLOCK_N)
            m_n = o_n < H
            m = m_b[:, None] & m_n[None, :]
            acc = load_f32(p_dh, o_rh, o_n, m)
            if RESIDENT:
                mk = m_b[:, None] & m_k[None, :]
                acc = mma(load_f32(p_dgh, o_rg, 0 * H + o_k, mk), b_wr, acc, INTERP)
                acc = mma(load_f32(p_dgh, o_rg, 1 * H + o_k, mk), b_wz, acc, INTERP)
                acc = mma(load_f32(p_dgh, o_rg, 2 * H + o_k, mk), b_wn, acc, INTERP)
            else:
                for k0 in range(0, H, BLOCK_K):
                    o_kk = k0 + o_k
                    m_kk = o_kk < H
                    mk = m_b[:, None] & m_kk[None, :]
                    for g in tl.static_range(NG):
                        acc = mma(load_f32(p_dgh, o_rg, g * H + o_kk, mk),
                                  load_w_cols(p_w, g * H + o_kk, o_n, H, m_kk, m_n), acc, INTERP)
            tl.store(p_dh + o_rh[:, None] + o_n[None, :], acc, mask=m)
        tl.debug_barrier()


def saved_shapes(T, B, H):
    return [((T, B, 4 * H), torch.float32), ((T, B, H), torch.float32)]


def gru_fwd(gx, h0, w_hh, b_hh, lengths, reverse, need_grad):
    """Launch the forward; returns y (T,B,H), hT (B,H), saved (acts, h_in)."""
    T, B, GH = gx.shape
    H = GH // G
    dev = gx.device
    launch = config.choose(G, B, H, gx.dtype, dev)
    y = config.new_out((T, B, H), gx.dtype, dev)
    hbuf = torch.empty(2, B, H, dtype=torch.float32, device=dev)
    hbuf[0].copy_(h0)
    saved = tuple(config.new_out(s, d, dev) for s, d in saved_shapes(T, B, H)) if need_grad else ()
    acts, h_in = saved if need_grad else (y, y)
    cnt = config.counters(launch, dev)
    gru_fwd_kernel[launch.grid](
        gx, w_hh, b_hh if b_hh is not None else gx, lengths if lengths is not None else gx,
        y, hbuf, acts, h_in, cnt, T, B, H,
        HAS_BIAS=b_hh is not None, HAS_LEN=lengths is not None, REVERSE=reverse, SAVE=need_grad,
        **config.kernel_args(launch))
    config.check_barrier(launch, cnt)
    return y, hbuf[T % 2].to(gx.dtype, copy=True), saved


def gru_bwd(dy, dhT, gx, w_hh, lengths, reverse, saved):
    """Launch the backward; returns d_gx (T,B,3H) in gx's dtype, d_gh (T,B,3H) fp32, dh0."""
    T, B, GH = gx.shape
    H = GH // G
    dev = gx.device
    acts, h_in = saved
    launch = config.choose(G, B, H, gx.dtype, dev)
    d_gh = config.new_out((T, B, GH), torch.float32, dev)
    d_gx = config.new_out((T, B, GH), gx.dtype, dev)
    dh = dhT.to(torch.float32, copy=True)
    cnt = config.counters(launch, dev)
    gru_bwd_kernel[launch.grid](
        dy, w_hh, lengths if lengths is not None else gx, acts, h_in, d_gh, d_gx, dh,
        cnt, T, B, H,
        HAS_LEN=lengths is not None, REVERSE=reverse, **config.kernel_args(launch))
    config.check_barrier(launch, cnt)
    return d_gx, d_gh, dh.to(gx.dtype)
