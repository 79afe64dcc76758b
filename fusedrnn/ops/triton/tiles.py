"""Tile pieces the two recurrence kernels share: W_hh tiles, the exchanged vector's
columns, the step's product, the gate split, the per-row time index, the output
rounding and the grid barrier.

Dimensions: T steps, B batch, H hidden units, P the exchanged state's width (the LSTM
projection's size, else H), G gates, GS gate slots stacked on the MMA's M side (4, or 1
for the RNN); BLOCK_N units per tile, BLOCK_B batch rows per program, KC columns of the
contraction (length K) per piece/chunk. Pointwise tiles are
(BLOCK_N, BLOCK_B): units down, batch across. Offsets into (rows, cols) arrays are a
row-offset vector over the batch (int64, already times the row stride) plus a column
vector over units.
"""
import triton
import triton.language as tl

#: 16-bit 2-D products as batched ones of one (tiles.dot2): Triton >= 3.9
BATCH_ONE_DOT = tl.constexpr(tuple(int(p) for p in triton.__version__.split(".")[:2]) >= (3, 9))


@triton.jit
def w_rows(p_w, n0, k0, N, K, G: tl.constexpr, GS: tl.constexpr, BLOCK_N: tl.constexpr, KC: tl.constexpr):
    """Forward operand of a (G*N, K) weight: rows g*N + n0 + i (i < BLOCK_N) of every gate
    slot g, columns k0..k0+KC, stacked slot-major: (GS*BLOCK_N, KC); rows of missing
    gates/units and columns >= K are 0. W_hh is (G*H, P); W_hr is (P, H) with G = GS = 1."""
    o_r = tl.arange(0, GS * BLOCK_N)
    o_g = o_r // BLOCK_N
    o_u = n0 + o_r % BLOCK_N
    o_c = tl.arange(0, KC)
    m = ((o_g < G) & (o_u < N))[:, None] & (k0 + o_c < K)[None, :]
    # the chunk's column offset on the scalar base: the offset tile is the same for every
    # chunk (hoisted once), not one live pointer tile per chunk in flight
    return tl.load((p_w + k0) + ((o_g * N + o_u)[:, None] * K + o_c[None, :]), mask=m, other=0.0)


@triton.jit
def w_cols(p_w, g, o_n, k0, N, K, KC: tl.constexpr):
    """Backward operand of a (G*K, N) weight: W[g*K + k, n] for k in k0..k0+KC and the
    columns o_n (< N) as a (BLOCK_N, KC) tile, the transpose of block g. W_hh is (G*H, P)
    (K = H, N = P); W_hr is (P, H) (K = P, N = H, g = 0)."""
    o_c = tl.arange(0, KC)
    m = (o_n < N)[:, None] & (k0 + o_c < K)[None, :]
    return tl.load((p_w + (g * K + k0) * N) + (o_c[None, :] * N + o_n[:, None]), mask=m, other=0.0)


@triton.jit
def stacked_rows(p, n0, H, G: tl.constexpr, GS: tl.constexpr, BLOCK_N: tl.constexpr, on):
    """p[g*H + n0 + i] for every gate slot, stacked like w_rows: (GS*BLOCK_N,) fp32, 0 where
    absent or when `on` (a runtime flag) is false."""
    o_r = tl.arange(0, GS * BLOCK_N)
    o_g = o_r // BLOCK_N
    o_u = n0 + o_r % BLOCK_N
    return tl.load(p + o_g * H + o_u, mask=tl.where(on, (o_g < G) & (o_u < H), False), other=0.0).to(tl.float32)


@triton.jit
def cols_T(p_x, o_row, m_b, k0, K, KC: tl.constexpr):
    """Columns k0..k0+KC (< K) of the rows o_row of an fp32 exchange array, transposed: (KC, BLOCK_B).

    .cg: what other programs wrote this step is read from L2, never from a stale L1 line."""
    o_c = tl.arange(0, KC)
    m = (k0 + o_c < K)[:, None] & m_b[None, :]
    return tl.load((p_x + k0) + (o_row[None, :] + o_c[:, None]), mask=m, other=0.0, cache_modifier=".cg")


@triton.jit
def issued(x, INTERP: tl.constexpr):
    """x (fp32, as loaded) through an opaque register move (ptxas drops the move itself).

    It stops Triton's layout propagation there: without it, Triton converts the loaded fp32
    operand of a dot into the dot-operand layout (through shared memory; for the narrow
    tiles here that layout repeats the operand in every warp) before mma's hi/lo split, so
    every warp splits all of it. Behind the move the split runs once per element, in the
    load's layout, and the two 16-bit halves are staged. Compiled for sm_90, the B1·H256 RNN
    forward: 720 -> 352 instructions per warp and step, 216 -> 92 registers. It also keeps
    the staging store (which waits for the load) behind every load written before the move.
    The interpreter runs no PTX: there x as it is."""
    if not INTERP:
        x = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=False, pack=1)
    return x


@triton.jit
def behind(x, last, always):
    """x, as ptxas must see it: not ready before `last` (a load of the same shape written after
    x's) has arrived. `always` is a runtime condition that holds (ptxas cannot fold it), so the
    select returns x bit for bit. Compiled for sm_90, ptxas scheduled the first pieces' tf32
    split (contract_split) between a sweep's loads, in registers the later loads then had to
    wait for: a sweep of 2-8 pieces issued in 2-4 groups, one round trip each (a 16-bit
    forward's pieces, contract_fwd: the first piece's loads, then the rest). Behind the
    select every use waits for the last load, so nothing can run between the loads (RNN B1·H256
    fp32 backward: 3 -> 2 round trips, +13 instructions). The interpreter runs the same select."""
    return tl.where(always, x, last)


@triton.jit
def hi_lo(b_x, dtype: tl.constexpr):
    """fp32 b_x as hi + lo, each exact in the 16-bit `dtype` (~16 mantissa bits together).

    hi from x clamped to the dtype's finite range, so an infinite x leaves lo = ±inf and
    inf * w stays ±inf (an infinite hi would give lo = inf - inf = NaN); NaN stays NaN."""
    if dtype == tl.float16:
        b_hi = tl.minimum(tl.maximum(b_x, -65504.0), 65504.0).to(dtype)
    else:
        b_hi = tl.minimum(tl.maximum(b_x, -3.0e38), 3.0e38).to(dtype)
    return b_hi, (b_x - b_hi.to(tl.float32)).to(dtype)


@triton.jit
def mma(b_w, b_x, acc, PREC: tl.constexpr, INTERP: tl.constexpr):
    """acc + b_w @ b_x with b_w (M, K) in the weight dtype and b_x (K, N) fp32.

    fp32 weights: one dot at precision PREC (tf32x3 on a GPU: three tensor-core products,
    ~fp32 accuracy; ieee in the interpreter). 16-bit weights: b_x is split into hi + lo
    (hi_lo), so two tensor-core dots see ~16 mantissa bits of the fp32 state while W stays
    exact. The interpreter cannot multiply bf16, so there the halves are widened back to
    fp32 (the products are exact either way)."""
    return mma_sides(b_w, b_x, acc, True, PREC, INTERP)


@triton.jit
def mma_xw(b_x, b_w, acc, PREC: tl.constexpr, INTERP: tl.constexpr):
    """acc + b_x @ b_w: mma with the fp32 operand on the left (the M side), W on the right."""
    return mma_sides(b_w, b_x, acc, False, PREC, INTERP)


@triton.jit
def mma_sides(b_w, b_x, acc, W_LEFT: tl.constexpr, PREC: tl.constexpr, INTERP: tl.constexpr):
    """mma and mma_xw: acc + b_w @ b_x (W_LEFT) or acc + b_x @ b_w."""
    if b_w.dtype == tl.float32:
        acc = dot_sides(b_w, b_x, acc, W_LEFT, PREC)
    else:
        b_hi, b_lo = hi_lo(b_x, b_w.dtype)
        if INTERP:
            b_w32 = b_w.to(tl.float32)
            acc = dot_sides(b_w32, b_hi.to(tl.float32), acc, W_LEFT, "ieee")
            acc = dot_sides(b_w32, b_lo.to(tl.float32), acc, W_LEFT, "ieee")
        else:
            acc = dot_sides(b_w, b_hi, acc, W_LEFT, None)
            acc = dot_sides(b_w, b_lo, acc, W_LEFT, None)
    return acc


@triton.jit
def dot_sides(b_w, b_x, acc, W_LEFT: tl.constexpr, PREC: tl.constexpr):
    if W_LEFT:
        acc = dot2(b_w, b_x, acc, PREC)
    else:
        acc = dot2(b_x, b_w, acc, PREC)
    return acc


@triton.jit
def dot2(a, b, acc, PREC: tl.constexpr):
    """acc + a @ b of 2-D tiles. From Triton 3.8 on, a 16-bit product whose N side is 8 (the
    batch rows here) compiles to wgmma (3.6/3.7: mma.sync), and in the recurrence its chain
    of 64x8x16 wgmmas is issued one by one, each behind a wait and its descriptors: Triton
    3.9 doubled the B1·H256 RNN backward's step loop (293 -> 722 instructions per step,
    spilling). A batched product of one never takes wgmma, and from 3.9 on its warps
    split M as the 2-D product's would: such tiles go that way there (BATCH_ONE_DOT), so
    each Triton version runs the tensor-core instruction 3.6 and 3.7 chose (3.8 keeps wgmma:
    its batched product gives every warp all of M)."""
    if BATCH_ONE_DOT and a.dtype != tl.float32 and len(a.shape) == 2 and b.shape[1] < 16:
        M: tl.constexpr = a.shape[0]
        K: tl.constexpr = a.shape[1]
        N: tl.constexpr = b.shape[1]
        acc = tl.reshape(tl.dot(tl.reshape(a, (1, M, K)), tl.reshape(b, (1, K, N)), tl.reshape(acc, (1, M, N)),
                                input_precision=PREC), (M, N))
    else:
        acc = tl.dot(a, b, acc, input_precision=PREC)
    return acc


@triton.jit
def split_slots(acc, GS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    """The stacked (GS*BLOCK_N, BLOCK_B) product as four (BLOCK_N, BLOCK_B) gate slots."""
    if GS == 1:
        a0, a1, a2, a3 = acc, acc, acc, acc
    else:
        x = tl.permute(tl.reshape(acc, (4, BLOCK_N, BLOCK_B)), (1, 2, 0))  # (BN, BB, slot)
        x_even, x_odd = tl.split(tl.reshape(x, (BLOCK_N, BLOCK_B, 2, 2)))  # slot = 2p + q: split on q
        a0, a2 = tl.split(x_even)
        a1, a3 = tl.split(x_odd)
    return a0, a1, a2, a3


@triton.jit
def load_slots(p, o_row, o_n, m, H, NS: tl.constexpr):
    """NS gate slots p[row, g*H + o_n] as fp32 (BLOCK_N, BLOCK_B) tiles; slots >= NS repeat slot 0."""
    x0, x1, x2, x3 = load_slots_raw(p, o_row, o_n, m, H, NS)
    return widen(x0), widen(x1), widen(x2), widen(x3)


@triton.jit
def load_slots_raw(p, o_row, o_n, m, H, NS: tl.constexpr):
    """load_slots in p's own element type: what a prefetch carries across steps, widened
    (widen) only where it is used, so nothing waits for the load before then."""
    p_t = p + o_row[None, :] + o_n[:, None]
    x0 = tl.load(p_t, mask=m, other=0.0)
    x1, x2, x3 = x0, x0, x0
    if NS > 1:
        x1 = tl.load(p_t + H, mask=m, other=0.0)
    if NS > 2:
        x2 = tl.load(p_t + 2 * H, mask=m, other=0.0)
    if NS > 3:
        x3 = tl.load(p_t + 3 * H, mask=m, other=0.0)
    return x0, x1, x2, x3


@triton.jit
def widen(x):
    """A loaded tile as fp32 (exact from 16-bit; a no-op for fp32)."""
    return x.to(tl.float32)


@triton.jit
def hold(x, PLAIN: tl.constexpr):
    """A 16-bit tile just loaded, kept as the load's own 32-bit words until `release`: a
    prefetch carried across steps. Each pair of a thread's consecutive elements (those a
    vector load packs in one register) becomes one int32 word in the even element, the first
    in its low half as PTX packs a .b16 pair (release unpacks it so); the odd one holds 0. As
    bf16 scalars instead, LLVM gives the loop one 16-bit phi per element and ptxas splits
    the loaded words into them (PRMT) before the loop's back edge: a use of the load in
    the step that issued it. The move itself is dropped by ptxas. fp32, and PLAIN (the
    interpreter, or a tile used one step after its load, which may wait for it at the end of
    the step that loaded it): x as it is."""
    if not PLAIN and x.dtype != tl.float32:
        x = tl.inline_asm_elementwise("mov.b32 $0, $2; mov.b32 $1, 0;", "=r,=r,r", [x], dtype=tl.int32,
                                      is_pure=True, pack=2)
    return x


@triton.jit
def release(x, dtype: tl.constexpr, PLAIN: tl.constexpr):
    """`hold`'s tile of the 16-bit `dtype` (or an fp32 tile as loaded) as fp32, exactly, where
    it is used. Both through inline asm that stays where it is written: as a plain op Triton
    moves the tile's layout conversion (through shared memory) up to the loop's head, where
    it waits for the load one step after it was issued, not two. PLAIN (as hold's): .to."""
    if PLAIN:
        y = x.to(tl.float32)
    elif x.dtype == tl.float32:
        y = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=False, pack=1)
    elif dtype == tl.bfloat16:  # bf16 is fp32's upper half
        y = tl.inline_asm_elementwise("shl.b32 $0, $2, 16; and.b32 $1, $2, 0xFFFF0000;", "=r,=r,r,r", [x],
                                      dtype=tl.float32, is_pure=False, pack=2)
    else:
        y = tl.inline_asm_elementwise("{ .reg .b16 l, h; mov.b32 {l, h}, $2; cvt.f32.f16 $0, l; cvt.f32.f16 $1, h; }",
                                      "=r,=r,r,r", [x], dtype=tl.float32, is_pure=False, pack=2)
    return y


@triton.jit
def release_slots(x0, x1, x2, x3, dtype: tl.constexpr, NS: tl.constexpr, PLAIN: tl.constexpr):
    """release of NS gate slots (load_slots_raw's, held); slots >= NS repeat slot 0."""
    y0 = release(x0, dtype, PLAIN)
    y1, y2, y3 = y0, y0, y0
    if NS > 1:
        y1 = release(x1, dtype, PLAIN)
    if NS > 2:
        y2 = release(x2, dtype, PLAIN)
    if NS > 3:
        y3 = release(x3, dtype, PLAIN)
    return y0, y1, y2, y3


@triton.jit
def store_slots(p, o_row, o_n, m, H, NS: tl.constexpr, x0, x1, x2, x3, INTERP: tl.constexpr):
    """Store NS gate slots to p[row, g*H + o_n], rounded to p's element type."""
    p_t = p + o_row[None, :] + o_n[:, None]
    tl.store(p_t, to_out(x0, p, INTERP), mask=m)
    if NS > 1:
        tl.store(p_t + H, to_out(x1, p, INTERP), mask=m)
    if NS > 2:
        tl.store(p_t + 2 * H, to_out(x2, p, INTERP), mask=m)
    if NS > 3:
        tl.store(p_t + 3 * H, to_out(x3, p, INTERP), mask=m)


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
def step_rows(s, b_len, o_b, m_b, B, reverse):
    """For loop step s: each batch row's time index (BLOCK_B,) and whether it is active.

    Rows past their length are parked on t = s, so every (t, b) with t >= lengths[b] is
    visited exactly once (to write its zeros); reverse runs t = len-1 .. 0. Returns the
    row index into (T, B, ·) arrays, t*B + b, as int64, and the active mask."""
    act = (s < b_len) & m_b
    o_t = tl.where(act & reverse, b_len - 1 - s, s)
    return o_t.to(tl.int64) * B + o_b, act


@triton.jit
def load_acquire(p, INTERP: tl.constexpr):
    """*p (int32) read with acquire semantics at GPU scope, by every thread: one
    ld.acquire (Triton drops an acquire add of 0 whose result looks unused, and one whose
    result is used runs in thread 0 and broadcasts through shared memory between two CTA
    barriers). The interpreter cannot run PTX: there an acquire add of 0 reads it."""
    if INTERP:
        v = tl.atomic_add(p, 0, sem="acquire", scope="gpu")
    else:
        v = tl.inline_asm_elementwise("ld.acquire.gpu.global.b32 $0, [$1];", "=r,l", [p], dtype=tl.int32,
                                      is_pure=False, pack=1)
    return v


@triton.jit
def sync(p_cnt, p_err, target, budget, BARRIER: tl.constexpr, INTERP: tl.constexpr):
    """Make every store before it visible to the threads that load after it; -> budget.

    Without BARRIER one program owns its batch rows: a CTA barrier suffices. With it,
    all programs of the batch tile meet at the tile's counter, in the fewest ordering
    operations the PTX memory model needs:
      arrive  a CTA barrier (it orders every thread's stores before thread 0's next
              operation), then one release add (a scalar atomic whose result is unused:
              one thread, no shared-memory broadcast). Release is cumulative over what
              the CTA barrier ordered before it, so no separate fence is needed.
      poll    every thread reads the counter with an acquire load (ld.acquire: no CTA
              barrier, no L1 invalidate, no atomic per poll) until it reaches `target`
              (syncs so far x programs); the counter only grows, so once seen it stays
              reached. The poll that sees it is itself the acquire: it reads a value
              >= target, so it synchronizes with every program's release add (RMWs
              continue the release sequence), and the exchange's loads can issue at once.
              (A relaxed poll followed by a separate acquire load would put one more
              dependent L2 round trip on every step: the critical-path check counts it.)
              The CTA barrier after it holds every thread until thread 0 has acquired,
              whatever the others saw.
    The exchanged values are then read with .cg loads (L2), never from a stale L1 line.
    All programs must be co-resident: the grid is sized from the SM count and launched
    cooperatively, so a lost co-residency is a launch error. A wait longer than `budget`
    polls gives up, raises the flag at p_err (the launcher turns it into a RuntimeError)
    and returns budget 0: the timeout is latched, later steps do not wait again, and the
    kernel ends in bounded time. (Threads decide this on their own polls; thread 0's
    decision alone raises the flag, and the closing CTA barrier makes every thread wait
    for thread 0, so no thread reads the exchange before thread 0 has seen the target
    unless the flag is raised.)
    """
    tl.debug_barrier()
    if BARRIER:
        tl.atomic_add(p_cnt, 1, sem="release", scope="gpu")
        seen = load_acquire(p_cnt, INTERP)
        spins = 0
        while (seen < target) & (spins < budget):
            seen = load_acquire(p_cnt, INTERP)
            spins += 1
        if seen < target:
            tl.atomic_xchg(p_err, 1, sem="relaxed", scope="gpu")
            budget = 0
        tl.debug_barrier()
    return budget
