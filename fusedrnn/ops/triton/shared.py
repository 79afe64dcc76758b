"""Pieces every fused-recurrence kernel shares: tile loads, the step matmul, the
pointwise helpers, the output rounding and the grid barrier.

Dimensions: T steps, B batch, H hidden units, G gates; BLOCK_B rows of the batch
per program, BLOCK_N hidden units per tile, BLOCK_K the chunk of the contraction.
"""
import triton
import triton.language as tl


@triton.jit
def tanh(x):
    # exp of a non-positive argument never overflows; the abs error stays ~1 ulp
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def mma(b_a, b_w, acc, INTERP: tl.constexpr):
    """acc + b_a @ b_w with b_a (M,K) float32 and b_w (K,N) in the weight dtype.

    float32 weights: an exact (IEEE) fp32 dot. 16-bit weights: b_a is split into
    hi + lo, each exactly representable in the weight dtype, so two tensor-core dots
    give ~16 mantissa bits of h while W is exact; the state error then stays far below
    the rounding of the stored outputs. The interpreter cannot multiply bf16 (it keeps
    bf16 as uint16), so there the split halves are widened back to fp32 first.
    """
    if b_w.dtype == tl.float32:
        acc = tl.dot(b_a, b_w, acc, input_precision="ieee")
    else:
        b_hi = b_a.to(b_w.dtype)
        b_lo = (b_a - b_hi.to(tl.float32)).to(b_w.dtype)
        if INTERP:
            b_w32 = b_w.to(tl.float32)
            acc = tl.dot(b_hi.to(tl.float32), b_w32, acc, input_precision="ieee")
            acc = tl.dot(b_lo.to(tl.float32), b_w32, acc, input_precision="ieee")
        else:
            acc = tl.dot(b_hi, b_w, acc)
            acc = tl.dot(b_lo, b_w, acc)
    return acc


@triton.jit
def load_w_rows(p_w, o_rows, o_k, H, m_rows):
    """W[o_rows, o_k]ᵀ as a (BLOCK_K, BLOCK_N) tile: the forward's B operand (p_w: (G*H, H))."""
    m = m_rows[None, :] & (o_k < H)[:, None]
    return tl.load(p_w + o_rows[None, :].to(tl.int64) * H + o_k[:, None], mask=m, other=0.0)


@triton.jit
def load_w_cols(p_w, o_rows, o_n, H, m_rows, m_n):
    """W[o_rows, o_n] as a (BLOCK_K, BLOCK_N) tile: the backward's B operand (p_w: (G*H, H))."""
    m = m_rows[:, None] & m_n[None, :]
    return tl.load(p_w + o_rows[:, None].to(tl.int64) * H + o_n[None, :], mask=m, other=0.0)


@triton.jit
def load_f32(p, o_row, o_col, m):
    """p[o_row, o_col] widened to fp32; o_row (BLOCK_B,) already scaled by the row stride.

    .cg: rows other programs wrote are read from L2, never from a stale L1 line."""
    return tl.load(p + o_row[:, None] + o_col[None, :], mask=m, other=0.0, cache_modifier=".cg").to(tl.float32)


@triton.jit
def to_out(x, p_out, INTERP: tl.constexpr):
    """fp32 -> the element type of p_out, rounding to nearest even (the interpreter
    truncates fp32 -> bf16, so there the rounding is done on the bits first)."""
    if INTERP:
        if p_out.dtype.element_ty == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            x = bits.to(tl.float32, bitcast=True)
    return x.to(p_out.dtype.element_ty)


@triton.jit
def step_rows(s, T, p_len, o_b, m_b, HAS_LEN: tl.constexpr, REVERSE: tl.constexpr):
    """For loop step s: each row's time index (BLOCK_B,) int64 and whether it is active.

    Rows past their length are inactive; they are parked on t = s so that every
    (t, b) with t >= lengths[b] is visited exactly once (to write its zeros)."""
    if HAS_LEN:
        b_len = tl.load(p_len + o_b, mask=m_b, other=0)
    else:
        b_len = tl.zeros(o_b.shape, tl.int32) + T
    active = (s < b_len) & m_b
    if REVERSE:
        o_t = tl.where(active, b_len - 1 - s, s)
    else:
        o_t = tl.zeros(o_b.shape, tl.int32) + s
    return o_t.to(tl.int64), active


@triton.jit
def sync(p_cnt, p_err, target, BARRIER: tl.constexpr, SPIN_LIMIT: tl.constexpr):
    """Make every store before it visible to the threads that load after it.

    Without BARRIER one program owns its batch rows, so a CTA barrier suffices. With
    BARRIER all programs of the batch tile meet: each adds 1 to its counter (release,
    after a CTA barrier so all its threads' stores are ordered before it; a scalar atomic
    is issued by one thread per program), then spins with acquire reads until the counter
    reaches `target` = syncs so far x programs. Only reachable on a GPU: all programs
    must be co-resident (the launcher sizes the grid from the SM count), and the
    interpreter runs programs one after another. A spin that outlasts SPIN_LIMIT reads
    (seconds; a step takes microseconds) gives up and raises the flag at p_err rather
    than hang the device; debug mode turns the flag into an error.
    """
    tl.debug_barrier()
    if BARRIER:
        tl.atomic_add(p_cnt, 1, sem="release", scope="gpu")
        seen = tl.atomic_add(p_cnt, 0, sem="acquire", scope="gpu")
        spins = 0
        while (seen < target) & (spins < SPIN_LIMIT):
            seen = tl.atomic_add(p_cnt, 0, sem="acquire", scope="gpu")
            spins += 1
        if seen < target:
            tl.atomic_xchg(p_err, 1)
        tl.debug_barrier()
