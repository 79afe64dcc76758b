"""A latency model of one recurrence step on the GPU: what the configuration choice
minimises, and the source of the predictions in benchmarks/NOTES.md.

A step of a persistent recurrence kernel is a chain of dependent latencies, so the
model adds them (only the prefetched inputs overlap):
    sync        grid barrier (atomic counter, measured 1.0 µs on an H100 with 132
                programs), or a CTA barrier, or nothing (carry layout)
    exchange    reading the exchanged vector (h, or d_gates backward) from L2: latency
                plus bytes per program at one SM's share of L2 bandwidth
    weights     W_hh streamed from L2 each step when it is not resident
    mma         the step's tensor-core work of one program (16-bit: two products, h split
                into hi + lo; fp32 tf32x3: three at half rate), derated when the batch
                side N of the MMA is narrow
    pointwise   the cell's elementwise math and the gate split, per element of the tile
    io          gx / y / saved activations over HBM (spread over all programs)
A projection adds a second phase per step (its barrier, the exchange of m_t forward or
of the gradient reaching h_t backward, W_hr streamed and its product); two directions in
one launch share the chip's L2 and HBM bandwidth.
Constants marked "assumed" are datasheet-level estimates, not measurements; the first
GPU run replaces them (benchmarks/NOTES.md keeps predictions and outcomes side by side).
"""
from __future__ import annotations

H100 = {
    "clock_ghz": 1.755,           # SM clock under load (assumed)
    "grid_barrier_us": 1.0,       # measured: 132 Triton programs, one atomic counter
    "cta_sync_us": 0.02,          # bar.sync and the store->load turnaround in L1 (assumed)
    "l2_latency_us": 0.35,        # dependent load served by L2, ~600 cycles (assumed)
    "l2_bw_per_sm_gbs": 110.0,    # one SM's share: ~64 B/clock (assumed)
    "l2_bw_gbs": 5500.0,          # whole-chip L2 read bandwidth (assumed)
    "hbm_bw_gbs": 3000.0,         # achieved HBM bandwidth (assumed; 3.35 TB/s peak)
    "wgmma_macs_per_clk": 2048.0,  # dense bf16 MACs per SM per clock (989 TFLOP/s datasheet)
    "mma_sync_macs_per_clk": 1024.0,  # mma.sync on sm_90: about half of wgmma (assumed)
    "tc_full_n": 64,              # batch side of the MMA at which it runs at full rate (assumed)
    "pointwise_instr_per_elem": 30,  # cell math per tile element, 128 threads, ~1 instruction/clock each (assumed)
    "pointwise_fixed_us": 0.15,   # transcendental chain + gate split (assumed)
}


def step_us(layout: str, n_programs_per_tile: int, n_tiles: int, block_n: int, block_b: int, gate_slots: int,
            kp: int, nkp: int, resident: bool, B: int, H: int, G: int, bits: int, direction: str, wgmma: bool,
            dev: dict = H100, proj: int = 0, kr: int = 0, directions: int = 1) -> dict:
    """Predicted µs per step of one launch, split into the model's terms (key "total").

    proj: the LSTM projection's size P (0: none): a second phase per step (W_hr m_t
    forward, W_hrᵀ g_t backward) with its own barrier and exchange. directions: program
    groups in the launch, which share the chip's L2 and HBM bandwidth."""
    clk = dev["clock_ghz"] * 1e3  # cycles per µs
    rows = min(B, block_b)
    P = proj or H
    K = P if direction == "fwd" else H  # W_hh's contraction
    k_eff = kp * nkp if resident else -(-K // kp) * kp
    phases = 2 if proj else 1
    if layout == "carry":
        sync = 0.0
        exchange = 0.0
    else:
        sync = phases * (dev["grid_barrier_us"] if n_programs_per_tile > 1 else dev["cta_sync_us"])
        width = P if direction == "fwd" else G * H  # h forward, d_gates backward
        if proj:
            width += H if direction == "fwd" else P  # m_t forward, g_t backward
        vec = width * 4 * rows  # fp32 exchange bytes one program reads
        total = vec * n_programs_per_tile * -(-B // block_b) * directions
        exchange = phases * dev["l2_latency_us"] + max(vec / (dev["l2_bw_per_sm_gbs"] * 1e3),
                                                       total / (dev["l2_bw_gbs"] * 1e3))
    m_rows = gate_slots * block_n if direction == "fwd" else block_n
    k_all = k_eff * (1 if direction == "fwd" else G)
    # the projection's product per tile: rows x contraction (carry: all of W_hr, resident)
    if not proj:
        pr_rows, pr_k = 0, 0
    elif layout == "carry":
        pr_rows, pr_k = kp, block_n
    else:
        pr_rows, pr_k = block_n, -(-(H if direction == "fwd" else P) // kr) * kr
    w_bytes = 0.0 if resident else n_tiles * m_rows * k_all * bits / 8
    if layout != "carry":
        w_bytes += n_tiles * pr_rows * pr_k * bits / 8
    weights = w_bytes / (dev["l2_bw_per_sm_gbs"] * 1e3)
    passes = 2.0 if bits == 16 else 6.0  # hi/lo products; tf32x3 = 3 products at half rate
    n_eff = max(block_b, 16 if wgmma else 8)
    peak = dev["wgmma_macs_per_clk"] if wgmma else dev["mma_sync_macs_per_clk"]
    rate = peak * min(1.0, n_eff / dev["tc_full_n"])
    mma = n_tiles * (m_rows * k_all + pr_rows * pr_k) * n_eff * passes / rate / clk
    elems = n_tiles * block_n * block_b * (1.2 if proj else 1.0)  # + the projection's select and store
    pointwise = dev["pointwise_fixed_us"] + elems / 128 * dev["pointwise_instr_per_elem"] / clk
    elt = bits / 8
    if direction == "fwd":
        io_bytes = B * (H * G * elt + P * elt)  # gx, y
    else:
        io_bytes = B * H * (G * 4 + G * elt + 5 * 4) + (B * P * (elt + 4) if proj else 0)  # + dy, g
    io = io_bytes * directions / (dev["hbm_bw_gbs"] * 1e3)
    terms = {"sync": sync, "exchange": exchange, "weights": weights, "mma": mma, "pointwise": pointwise, "io": io}
    terms["total"] = sum(terms.values())
    return terms
