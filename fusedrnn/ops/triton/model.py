"""A latency model of one recurrence step on the GPU: what the configuration choice
minimises, and the source of the Triton predictions in benchmarks/NOTES.md. Its constants
are the machine model's (fusedrnn/machine.py, one set for both backends, overridable by a
calibration file).

A step of a persistent recurrence kernel is a chain of dependent latencies, so the model
charges every one on the step's path (the compile gate reads the same counts from the
compiled SASS, tools/compile_check/sass_path.py):
    sync        per phase: the barrier's poll (a flag round trip; the arrive is a
                fire-and-forget atomic) and the CTA barriers around it; cta: its own CTA
                barriers (CTA_BARRIER_FIT) and the wait for a step's input, loaded two steps
                ahead: half an L2 latency per step (CTA_PREFETCH_TRIPS)
    exchange    the exchanged vector (h, or d_gates backward) read from L2: one dependent
                round trip for a resident W_hh in one piece, one in several forward (every
                piece's loads in one sweep: fp32's narrow pieces, 16-bit ones held behind the
                last load), a backward's pieces split in K over the warps one in one sweep of
                loads, else one more per further sweep, or one per
                STREAM_AHEAD streamed chunks, plus bytes at one SM's share of L2 bandwidth
    weights     W_hh streamed from L2 each step when it is not resident (bandwidth; its
                chunks' latency is the exchange's round trips, loaded alongside)
    mma         the larger of the tensor-core throughput (16-bit: two products, h split
                into hi + lo; fp32: 3xTF32) and the dependent chain of mma.sync k-steps
                into one accumulator (machine.mma_dep_cycles)
    issue       the instructions one warp issues per step (ISSUE_FIT: a fit to the
                compile gate's SASS counts) at the machine model's issue rate; the mma
                chain issues among them, so the total takes the larger of mma and issue
    io          gx / y / saved activations over HBM (spread over all programs)
A projection adds a second phase per step (its barrier, the exchange of m_t forward or
of the gradient reaching h_t backward, W_hr streamed and its product); two directions in
one launch share the chip's L2 and HBM bandwidth.
"""
from __future__ import annotations

from ... import machine

#: chunks a streamed contraction keeps in flight (steps.STREAM_AHEAD; steps.py needs Triton)
STREAM_AHEAD = 2
#: a backward's W_hh resident in several pieces: each piece's product split in K over this many
#: warps (steps.contract_split; config runs it at resident_bwd_pieces_warps), its loads in
#: sweeps of at most this many exchanged values (one sweep of the LSTM's 12 x 256 x 16 spills)
RESIDENT_BWD_SPLIT = 8
RESIDENT_BWD_SWEEP_ELEMS = 40960
#: CTA barriers (bar.sync) per barrier phase around the poll of the grid barrier (tiles.py)
BARRIER_CTA_SYNCS = 4
#: instructions per warp per step: fixed + per mma instruction + per pointwise element per
#: thread and gate (fit to the compile gate's SASS counts at the anchors, sm_90)
ISSUE_FIT = {"base": 300.0, "per_mma": 14.0, "per_elem_gate": 40.0}
#: the same for the cta layout (one program, no exchange code), fit to the compile gate's SASS
#: counts of its B8·H128 kernels (RNN, GRU, LSTM, forward and backward, 8 and 16 batch rows, 4
#: and 8 warps; sm_90): no separate cost per mma instruction came out of the fit
CTA_ISSUE_FIT = {"base": 87.0, "per_mma": 0.0, "per_elem_gate": 35.0}
#: CTA barriers per step of the cta layout (layout conversions through shared memory: the
#: product's operand, the gate split, the stores), fit to the same compiles per direction:
#: const + per_gate * G + per_gate_row8 * G * BLOCK_B / 8
CTA_BARRIER_FIT = {"fwd": (5.7, -0.9, 2.7), "bwd": (2.3, 6.9, 0.9)}
#: steps ahead of its use that the cta layout loads a step's input (gx, or dy and the saved
#: activations; the zoneout masks): its step loop is unrolled by this many (kernels.py), 1 or 2
CTA_PREFETCH_AHEAD = 2
#: dependent L2 round trips per step of the cta layout: the input's load, whose wait each step
#: meets one at a time. Compiled for sm_90 (B8·H128 RNN, GRU, LSTM; B1·H256 RNN; bf16, fp32)
#: each load's first use is its release two steps (one trip of the unrolled loop) after it was
#: issued: one L2 latency per two steps. (Loaded one step ahead and converted to fp32 there, as
#: before, it was one per step.)
CTA_PREFETCH_TRIPS = 1 / CTA_PREFETCH_AHEAD
#: dependent round trips per phase of the solo layout beyond its streamed chunks': its own state
#: goes through memory between the CTA barriers (the compile gate's SASS, GRU B5·H7 bf16: 2
#: forward, where the chunks account for 1; 3 backward, 2)
SOLO_EXTRA_TRIPS = 1


def step_us(layout: str, n_programs_per_tile: int, n_tiles: int, block_n: int, block_b: int, gate_slots: int,
            kp: int, nkp: int, resident: bool, B: int, H: int, G: int, bits: int, direction: str, wgmma: bool,
            dev: dict | None = None, proj: int = 0, kr: int = 0, directions: int = 1, warps: int = 4,
            second_phase: bool = False, split: bool = False) -> dict:
    """Predicted µs per step of one launch, split into the model's terms (key "total"), and
    the dependent round trips it charges (key "round_trips", not in the total).

    dev: the machine model (default: fusedrnn.machine.current()). proj: the LSTM
    projection's size P (0: none): a second phase per step (W_hr m_t forward, W_hrᵀ g_t
    backward) with its own barrier and exchange. directions: program groups in the launch,
    which share the chip's L2 and HBM bandwidth. warps: per program. second_phase: the GRU with
    its reset gate before the product (cell "gru_reset_before"): a second barrier and exchange
    per step (r ⊙ h_{t-1} forward, the gradient through it backward, H wide) before the n gate's
    product, whose chain and instructions the fit below does not count (a lower bound there). split: a
    forward's resident pieces split in K over the warps as a backward's (config.resident_split_fwd_ok)."""
    dev = dev or machine.current()
    clk = dev["clock_ghz"] * 1e3  # cycles per µs
    rows = min(B, block_b)
    P = proj or H
    K = P if direction == "fwd" else H  # W_hh's contraction
    k_eff = kp * nkp if resident else -(-K // kp) * kp
    phases = 2 if proj or second_phase else 1
    # dependent round trips: each resident piece, each STREAM_AHEAD streamed chunks (per gate
    # backward, per tile: a chunk's loads issue once the chunk STREAM_AHEAD before it has
    # arrived) of the exchange, and the barrier's poll per phase; the forward projection's
    # W_hr chunks (and with several tiles W_hh's too) rotate three slots: one per chunk
    rotated = bool(proj) and direction == "fwd" and n_tiles > 1
    chunks = -(-K // kp) * (1 if direction == "fwd" else G)
    # resident: the first piece, then every later piece's loads together (config.resident_pieces);
    # a backward's pieces split in K (steps.contract_split): in one sweep all together (every
    # piece held behind the last load, tiles.behind); in several the first piece, then one per sweep
    split = resident and (direction == "bwd" or split) and layout != "cta" and nkp > 1
    sweeps = -(-nkp // min(nkp, max(1, RESIDENT_BWD_SWEEP_ELEMS // (kp * block_b))))
    if split:
        pieces = 1 if sweeps == 1 else 1 + sweeps
    else:
        # a forward's pieces: every piece's loads in one sweep (fp32's narrow pieces,
        # config.resident_pieces_fp32; 16-bit ones held behind the last load, tiles.behind)
        one_sweep = direction == "fwd"
        pieces = (1 if one_sweep else min(nkp, 2)) if resident else (
            chunks if rotated else -(-chunks // STREAM_AHEAD)) * n_tiles
    if proj and layout != "cta":
        r_chunks = -(-(H if direction == "fwd" else P) // kr)
        pieces += (r_chunks if direction == "fwd" else -(-r_chunks // STREAM_AHEAD)) * n_tiles
    if second_phase and layout != "cta":
        pieces += 1  # the second phase's exchange: one sweep of r ⊙ h (its gradient backward)
    flags = phases if layout != "cta" and n_programs_per_tile > 1 else 0
    loads = CTA_PREFETCH_TRIPS if layout == "cta" else pieces
    if layout == "solo":  # its SASS reads one round trip per phase beyond the chunks' (GRU B5·H7: 2 fw, 3 bw)
        loads += SOLO_EXTRA_TRIPS * phases
    if layout == "cta":  # no exchange: the CTA's own barriers and the prefetch's wait
        c0, c_g, c_gb = CTA_BARRIER_FIT["fwd" if direction == "fwd" else "bwd"]
        bars = c0 + c_g * G + c_gb * G * block_b / 8
        if second_phase and direction == "fwd":  # the n gate's product over r ⊙ h: its operand staged again
            bars += c0
        sync = max(0.0, bars) * dev["cta_sync_us"]
        exchange = loads * dev["l2_latency_us"]
    else:
        sync = flags * (dev["flag_round_trip_us"] + BARRIER_CTA_SYNCS * dev["cta_sync_us"]) + (
            phases * dev["cta_sync_us"] if not flags else 0.0)
        width = P if direction == "fwd" else G * H  # h forward, d_gates backward
        if proj:
            width += H if direction == "fwd" else P  # m_t forward, g_t backward
        if second_phase:
            width += H  # r ⊙ h_{t-1} forward, its gradient backward
        vec = width * 4 * rows  # fp32 exchange bytes one program reads
        total = vec * n_programs_per_tile * -(-B // block_b) * directions
        exchange = loads * dev["l2_latency_us"] + max(vec / (dev["l2_bw_per_sm_gbs"] * 1e3),
                                                      total / (dev["l2_bw_gbs"] * 1e3))
    m_rows = gate_slots * block_n if direction == "fwd" else block_n
    # a resident grid backward's pieces cover all G*H rows; cta's and streamed chunks are per gate
    k_all = k_eff if direction == "fwd" or (resident and layout != "cta") else k_eff * G
    # the projection's product per tile: rows x contraction (cta: all of W_hr, resident)
    if not proj:
        pr_rows, pr_k = 0, 0
    elif layout == "cta":
        pr_rows, pr_k = kp, block_n
    else:
        pr_rows, pr_k = block_n, -(-(H if direction == "fwd" else P) // kr) * kr
    w_bytes = 0.0 if resident else n_tiles * m_rows * k_all * bits / 8
    if layout != "cta":
        w_bytes += n_tiles * pr_rows * pr_k * bits / 8
    weights = w_bytes / (dev["l2_bw_per_sm_gbs"] * 1e3)
    passes = 2.0 if bits == 16 else 6.0  # hi/lo products; tf32x3 = 3 products at half rate
    n_eff = max(block_b, 16 if wgmma else 8)
    peak = dev["wgmma_macs_per_clk"] if wgmma else dev["mma_sync_macs_per_clk"]
    # wgmma's rate grows with its N up to tc_full_n; mma.sync's shape is fixed (n8, in n_eff)
    rate = peak * (min(1.0, n_eff / dev["tc_full_n"]) if wgmma else 1.0)
    # cta's reset-before GRU forward: a second product of the stacked rows, after the first (its chain follows)
    cta_rb = layout == "cta" and second_phase and direction == "fwd"
    macs = n_tiles * (m_rows * k_all * (2 if cta_rb else 1) + pr_rows * pr_k) * n_eff
    k_step = 16 if bits == 16 else 8
    # mma instructions per warp (m16n8k16; fp32: m16n8k8 three times) and the chain into one
    # accumulator: every k-step of every piece, twice for the 16-bit hi/lo split
    n_mma = macs / (16 * 8 * k_step) * (2 if bits == 16 else 3) / warps
    chain = (k_all * (2 if cta_rb else 1) / (RESIDENT_BWD_SPLIT if split else 1) + pr_k) / k_step * (
        2 if bits == 16 else 3) * n_tiles
    link = dev["mma_dep_cycles_bf16"] if bits == 16 else dev["mma_dep_cycles_tf32"]
    mma = max(macs * passes / rate / clk, chain * link / clk)
    elems = n_tiles * block_n * block_b * (1.2 if proj else 1.0)  # + the projection's select and store
    f = CTA_ISSUE_FIT if layout == "cta" else ISSUE_FIT
    # cta counts the reset-before GRU's second phase as one more gate's pointwise work (the grid fit does not)
    gates = G + (1 if layout == "cta" and second_phase else 0)
    insts = f["base"] + f["per_mma"] * n_mma + f["per_elem_gate"] * elems / (32 * warps) * gates
    issue = machine.issue_us(dev, insts, warps)
    elt = bits / 8
    if direction == "fwd":
        io_bytes = B * (H * G * elt + P * elt)  # gx, y
    else:
        io_bytes = B * H * (G * 4 + G * elt + 5 * 4) + (B * P * (elt + 4) if proj else 0)  # + dy, g
    io = io_bytes * directions / (dev["hbm_bw_gbs"] * 1e3)
    terms = {"sync": sync, "exchange": exchange, "weights": weights, "mma": mma, "issue": issue, "io": io}
    # the warp issues its instructions, the mma chain among them, between the waits
    terms["total"] = sync + exchange + weights + max(mma, issue) + io
    terms["round_trips"] = flags + loads
    return terms
