"""Launch configuration of the fused recurrence kernels: the tuning table, the device
limits, and the choice of layout and tile sizes.

Dimensions: B batch, H hidden units, P the exchanged state's width (the LSTM projection's
size, else H), D directions, G gates, GS gate slots stacked on the MMA's M side (4, or 1
for the RNN). A program owns BLOCK_B batch rows and N_TILES tiles of BLOCK_N units (all
gates of each unit, so the pointwise update needs no exchange) and, with a projection,
the same tiles of the rows of h.

Layouts (kernels.py has the details):
  cta    one program per batch tile holds all of W_hh and the state; no barrier at all
         (at B <= 8 a batch tile of 8 rows, mma.sync's n8)
  grid   programs share a batch tile's units and meet at a grid barrier each step; all
         must be co-resident: at most SMs x programs_per_sm, launched cooperatively
  solo   one program per batch tile streams all of W_hh each step; always fits (fallback)
Every layout runs a projection (proj_size): cta keeps W_hr resident beside W_hh, grid
and solo stream it from L2 and meet twice per step (after m_t, after h_t). Two directions
run as two program groups of one launch (grid axis 2; the grid layout's co-residency
counts both), or, where the model predicts it faster (a grid that would have to halve),
as two launches one after the other, each with the whole device (`Launch.D` > grid[2]).
`choose` is a pure function of the sizes, the dtype and the device's limits given as
plain numbers (`DeviceLimits`), so CPU tests and the compile gate ask it what a launch on
an H100 would be; only the launcher reads the limits from torch (`device_limits`). Among
the configurations whose estimated registers and shared memory fit, it takes the one the
latency model (model.py) predicts fastest. No autotuning, nothing depends on T, nothing
runs at import.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton

from ... import machine, settings
from ...cell_table import GRU_RESET_BEFORE
from . import model
from .cells import CELLS, GATES

#: Triton decides at import whether kernels run in the CPU interpreter.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: every launch asks for fused multiply-adds: the default of Triton 3.6 to 3.9, which 3.9 warns
#: will turn off in 3.10 (more instructions per step, other rounding than every test has seen)
FP_FUSION = dict(enable_fp_fusion=True)

LAYOUTS = ("cta", "grid", "solo")
#: earlier names of the layouts, accepted (with a FutureWarning) until the next release
RENAMED_LAYOUTS = {"carry": "cta"}

#: Every tuning constant of the kernels, in one place.
TUNING = {
    # "auto", or one of LAYOUTS to force it wherever it can run (tests, debugging);
    # environment: FUSEDRNN_TRITON_LAYOUT
    "layout": settings.get("FUSEDRNN_TRITON_LAYOUT", "auto"),  # read through layout_name
    "block_b_min": 16,             # batch side of the MMA; wgmma needs N >= 16
    "block_b_max": 64,
    "cta_block_b_min": 8,          # the cta layout's batch side at B <= 8: mma.sync's n8 (Triton >= 3.6 takes
                                   # a dot's N of 8); half the pointwise work of 16 rows, where 8 are padding
    "cta_lstm_bwd_elems": 1024,    # largest tile (BLOCK_N x BLOCK_B) of the LSTM backward's cta layout
    "cta_w_per_thread": 256,       # W_hh elements per thread of a cta program: beyond, ptxas spills
                                   # (RNN B1·H256 at 4 warps, 512: 616 bytes forward, 408 backward)
    "cta_w_per_thread_fp32": 64,   # the same in fp32 (tf32x3 keeps two halves): RNN B8·H128 at 8 warps
                                   # 152 registers, at 4 warps (128) it spills 8 bytes
    "cta_rnn_fp32_w": 128 * 128,   # largest fp32 W_hh of the RNN's cta layout (other cells: 32 x 128)
    "cta_regularised_tile": 4,     # with the masks, a cta program whose W_hh is at cta_w_per_thread holds at
                                   # most this many elements of a tile per thread: the masks' two-step buffers
                                   # (RNN B8·H256 bf16, 8: 24 bytes spilled forward, 128 backward; LSTM B8·H128, 4: none)
    "block_n": (8, 16, 32, 64, 128),  # units per tile tried
    "stream_kp": 64,               # contraction chunk when W_hh is streamed
    "resident_kp_max": 1024,       # widest piece of a resident W_hh
    "resident_piece_elems": 16384,  # exchanged-vector values (KP x BLOCK_B, fp32) one resident piece loads
    "resident_pieces_max": 8,      # NKP: pieces of a resident W_hh (unrolled)
    "cta_max": 256,                # widest H (padded) of the cta layout's single tile
    "resident_bwd_bytes": 16 * 1024,  # largest W_hh slice the backward keeps resident in one piece (G x H x BLOCK_N)
    "resident_bwd_pieces_bytes": 48 * 1024,  # the same in several pieces (K split over the warps)
    "resident_staged_max": 4096,   # exchanged-vector elements (KP x BLOCK_B) one piece of a resident forward stages
    "resident_pieces_bn_max": 8,   # widest tile (units) of a resident forward in several pieces
    "resident_bwd_staged_max": 16384,  # exchanged-vector elements (G x H x BLOCK_B) of a backward in one piece;
                                       # beyond, pieces of resident_staged_max
    "resident_bwd_pieces_max": 12,  # NKP of such a backward (unrolled)
    "resident_bwd_pieces_warps": 8,  # warps of such a backward: one K slice each (model.RESIDENT_BWD_SPLIT)
    # 16-bit wide tiles (resident_wide): W_hh resident in tiles of 32+ units at the large shapes, 8 warps, compiled
    # for sm_90 with no spill and all of a step's exchange loads in one sweep (RNN B256·H512 forward 64 x 512 and
    # backward 512 x 64 in one piece, RNN B64·H1024 32 x 1024 in two pieces forward and four backward, LSTM and GRU
    # B256·H512 forward 128 x 512 in two pieces); beyond these limits they spilled (RNN 64 x 1024 forward, 616 bytes)
    "resident_wide_bn_min": 32,    # narrower tiles keep resident_pieces_bn_max's rule
    "resident_wide_staged_max": 8192,  # exchanged values (KP x BLOCK_B) one piece of a wide forward stages
    "resident_wide_wgmma_bytes": 128 * 1024,  # wide forward slice whose stacked rows are wgmma's (GS*BLOCK_N % 64)
    "resident_wide_wgmma_k": 512,  # ... and its contraction (RNN 64 x 1024, 128 KB: 616 bytes spilled)
    "resident_wide_mma_bytes": 64 * 1024,  # wide slice on mma.sync (16 batch rows; RNN 32 x 512 at 32 rows spilled 8)
    "resident_wide_warps": 8,
    "resident_wide_sweep": 16384,  # exchanged values per step (K x BLOCK_B; backward G*K x BLOCK_B) of a wide tile:
                                   # 64 KB of fp32, 64 registers per thread at 8 warps (LSTM B256·H512's 512 x 32)
    "resident_bwd_n8_bn": 16,      # a 16-bit backward's split pieces over a batch tile of 8 rows (mma.sync's n8,
                                   # W on the M side: steps.contract_split) in tiles of this many units
    "resident_bwd_n8_bytes": 96 * 1024,  # the largest such slice (LSTM B16·H768: 96 KB, 107520 bytes of shared
                                         # memory, 243 registers, no spill; its 12 pieces' loads in one sweep)
    "resident_bwd_split_min": 1024,  # a 16-bit backward's one piece at least this wide is also offered in split
                                     # pieces (its chain of 2 x KP / 16 mma in every warp; sm_90: B1·H256 LSTM
                                     # and GRU, RNN B16·H768 read faster split). At B8·H128 (512) the cta layout
                                     # read faster than the split grid, which the model does not tell apart
    # fp32 (tf32x3: W_hh's hi and lo halves in shared memory, each piece's operands split in registers): a
    # forward keeps W_hh resident in narrow pieces (resident_pieces_fp32); compiled for sm_90, LSTM B1·H256
    # in 2 pieces of 128 and B8·H128 in 4 of 32: no spill, all pieces' loads in one sweep (2 round trips)
    "resident_fp32_kp_max": 128,   # widest piece (LSTM B1·H256 in one piece of 256: 192 bytes spilled)
    "resident_fp32_sweep": 256,    # KP x the batch rows in use of one piece: wider, ptxas issues the piece's
                                   # loads one at a time (LSTM B8·H128, one piece of 128: 5 round trips)
    "resident_fp32_bytes": 32 * 1024,  # largest fp32 slice (GS*BLOCK_N x K; LSTM B16·H768's 96 KB spilled)
    "resident_fp32_bwd_kp": 128,   # an fp32 backward's pieces, split in K over 8 warps (steps.contract_split needs
                                   # KP / 8 >= 16); unsplit, pieces of 32 to 1024 spilled 152-1752 bytes (LSTM B1·H256)
    "resident_fp32_bwd_bytes": 32 * 1024,  # largest fp32 backward slice (G x H x BLOCK_N; LSTM B1·H256: 32 KB)
    "programs_per_sm": 1,          # co-residency bound of the grid layout
    "regs_budget": 176,            # estimated registers per thread a configuration may use
    "smem_margin": 16 * 1024,      # shared memory left unclaimed below the opt-in limit
    "maxnreg": 255,                # register cap written into the PTX (ptxas's own default spills)
    "num_stages": 1,               # Triton's own pipelining (2+ spills inside the time loop); the streamed
                                   # chunks are pipelined by hand, 2 slots (steps.contract_fwd/contract_bwd)
    "spin_limit": 1 << 22,         # barrier polls per step before the wait gives up (~1 s)
    "interpret_sms": 4,            # SMs the interpreter stands for when a grid is forced
}

#: what the interpreter stands for: the grid layout only when forced (tests run its
#: programs in threads, tests/support/interpreter_threads.py)
INTERPRETER = None  # set below, after DeviceLimits


@dataclass(frozen=True)
class DeviceLimits:
    """The limits a launch is planned for, as plain numbers."""
    sms: int             # multiprocessors
    smem_optin: int      # bytes of shared memory one block may opt in to
    regs_per_sm: int     # 32-bit registers per multiprocessor


H100 = DeviceLimits(machine.H100_LIMITS["sms"], machine.H100_LIMITS["smem_optin"], machine.H100_LIMITS["regs_per_sm"])
INTERPRETER = DeviceLimits(TUNING["interpret_sms"], H100.smem_optin, H100.regs_per_sm)


def device_limits(device: torch.device) -> DeviceLimits:
    """The limits of a CUDA device, read from torch (the launcher's only use of them)."""
    if INTERPRET or torch.device(device).type != "cuda":
        return DeviceLimits(TUNING["interpret_sms"], INTERPRETER.smem_optin, INTERPRETER.regs_per_sm)
    p = torch.cuda.get_device_properties(device)
    return DeviceLimits(p.multi_processor_count,
                        getattr(p, "shared_memory_per_block_optin", H100.smem_optin),
                        getattr(p, "regs_per_multiprocessor", H100.regs_per_sm))


class Launch(NamedTuple):
    layout: str          # "cta" | "grid" | "solo"
    grid: tuple          # (programs per batch tile, batch tiles, directions per launch)
    BLOCK_B: int
    BLOCK_N: int
    KP: int              # contraction piece (resident) or chunk (streamed)
    NKP: int             # pieces of a resident W_hh (1 when streamed)
    N_TILES: int         # unit tiles per program
    RESIDENT: bool       # W_hh loaded once (N_TILES == 1)
    num_warps: int
    num_stages: int
    smem_est: int        # estimated shared memory, bytes
    regs_est: int        # estimated registers per thread
    us_per_step: float   # the latency model's prediction on an H100 (both directions, launches in turn)
    KR: int = 0          # chunk of the projection's contraction when W_hr is streamed
    PROJ: bool = False   # LSTM projection (h_t = W_hr m_t, P wide)
    D: int = 1           # directions of the call: D // grid[2] launches one after the other
    SPLIT: bool = False  # a forward's resident pieces split in K over the warps (resident_split_fwd_ok;
                         # a backward's are whenever NKP > 1)

    @property
    def CARRY(self) -> bool:
        return self.layout == "cta"

    @property
    def BARRIER(self) -> bool:
        return self.grid[0] > 1

    def constexprs(self) -> dict:
        return dict(BLOCK_B=self.BLOCK_B, BLOCK_N=self.BLOCK_N, KP=self.KP, NKP=self.NKP, KR=self.KR,
                    N_TILES=self.N_TILES, RESIDENT=self.RESIDENT, CARRY=self.CARRY, BARRIER=self.BARRIER,
                    PROJ=self.PROJ, SPLIT=self.SPLIT)

    @property
    def launches(self) -> int:
        """Launches per call: 1, or one per direction when the directions run in turn."""
        return self.D // self.grid[2]


def _pow2(n: int, lo: int = 1) -> int:
    return max(lo, triton.next_power_of_2(n))


def gate_slots(cell: str) -> int:
    return 1 if GATES[CELLS[cell]] == 1 else 4


def uses_wgmma(m_rows: int, block_b: int, warps: int) -> bool:
    """Whether Triton lowers the step's product to wgmma (else mma.sync) on sm_90."""
    return m_rows % 64 == 0 and block_b >= 16 and warps % 4 == 0


def resident_pieces(K: int, block_b: int = 16, piece_elems: int | None = None,
                    pieces_max: int | None = None) -> tuple[int, int] | None:
    """(KP, NKP) covering a contraction of length K with the fewest pieces (then the fewest
    columns), or None. Each piece is a sweep of loads of the exchanged vector after the
    barrier; compiled for sm_90, ptxas issues the first piece's loads, stages that piece,
    then issues every later piece's loads together in the first piece's registers: one L2
    round trip for one piece, two for several (benchmarks/NOTES.md "Critical path"), so one
    piece is best; a piece loads KP x block_b fp32 values (at most `piece_elems`, default
    `resident_piece_elems`), at most `pieces_max` pieces (default `resident_pieces_max`)."""
    best = None
    kp = 16
    piece_elems = piece_elems or TUNING["resident_piece_elems"]
    kp_max = min(TUNING["resident_kp_max"], max(16, piece_elems // block_b))
    while kp <= kp_max:
        nkp = -(-K // kp)
        if nkp <= (pieces_max or TUNING["resident_pieces_max"]):
            key = (nkp, kp * nkp)
            if best is None or key < best[0]:
                best = (key, (kp, nkp))
        kp *= 2
    return best[1] if best else None


#: live fp32 tiles of the pointwise part per cell and direction (register estimate)
LIVE_TILES = {("lstm", "fwd"): 12, ("gru", "fwd"): 11, ("rnn", "fwd"): 6,
              ("lstm", "bwd"): 24, ("gru", "bwd"): 22, ("rnn", "bwd"): 12,
              # the GRU with its reset gate before the product: not fitted, the GRU's plus the second
              # phase's r ⊙ h and product (forward), r, h_{t-1} and W_hnᵀ d_n (backward)
              ("gru_reset_before", "fwd"): 13, ("gru_reset_before", "bwd"): 25}
#: the register estimate's coefficients, fitted to ~100 sm_90 compiles of these kernels
#: (regs + spill/4 against per-thread elements; tools/compile_check checks the result)
REG_FIT = {"base": 104, "pointwise": 0.65, "acc": 3.95, "piece": 2.0, "chunk": 0.5, "resident_piece": 0.9}
#: the cta layout's registers: this base plus one per live tile and accumulator element
#: per thread (LSTM/GRU/RNN at B8 H128: 167-211 measured where this gives 176-264)
CARRY_REG_BASE = 64


def resources(cell: str, direction: str, bits: int, block_b: int, block_n: int, kp: int, nkp: int, resident: bool,
              warps: int, stages: int, carry: bool = False, proj: int = 0, kr: int = 0) -> tuple[int, int]:
    """Estimated (shared memory bytes, registers per thread) of one program.

    Shared memory: a resident W_hh lives there (Triton hoists its staging out of the
    loop; fp32 keeps the tf32x3 hi and lo halves, twice the bytes), the exchanged
    vector's piece is staged there every step (hi and lo halves, or fp32 halves), the
    accumulator's gate split converts layouts through it, and a streamed chunk of
    W_hh passes through it (times the pipeline stages). Registers: a linear fit in the
    elements per thread of the live pointwise tiles, the accumulator, the staged piece
    and a streamed chunk (REG_FIT). A projection adds, in cta, the resident W_hr (kp x
    block_n), m_t staged for its product and the h tile; elsewhere the streamed W_hr chunk
    (kr wide) with its staged piece, and the tile of h and its product."""
    G, GS = GATES[CELLS[cell]], gate_slots(cell)
    elt = bits // 8
    split = 2 if bits == 32 else 1  # tf32x3 keeps both halves of each fp32 operand
    threads = 32 * warps
    m_rows = GS * block_n if direction == "fwd" else block_n
    # a resident grid backward's pieces cover all G*H rows; cta's are one per gate
    w_cols = kp * nkp * (G if carry and direction == "bwd" else 1)
    smem = kp * block_b * 4 * split + m_rows * block_b * 4
    chunk = 0
    if resident:
        smem += m_rows * w_cols * elt * split
    else:
        smem += max(1, stages) * m_rows * kp * elt * split
        chunk = m_rows * kp * split / threads
    live = LIVE_TILES[("rnn" if GS == 1 else cell, direction)]
    if carry:  # no exchange loads: the live tiles and the accumulator (fit to 8 cta compiles)
        regs = CARRY_REG_BASE + (live * block_n + m_rows) * block_b / threads
        if proj:
            smem += kp * block_n * elt * split + block_n * block_b * 4 * split
            regs += (kp * block_n * split + 2 * kp * block_b) / threads
        return int(smem), int(regs)
    f = REG_FIT
    # a resident program's piece is held in the load's layout (steps.contract_*: tiles.issued
    # keeps Triton from replicating it per warp); ptxas loads the later pieces into the first
    # one's registers once it is staged (resident_pieces), so one piece is live at a time
    staged = (f["resident_piece"] if resident else f["piece"]) * kp * block_b * split / threads
    regs = (f["base"] + f["pointwise"] * live * block_n * block_b / threads + f["acc"] * m_rows * block_b / threads
            + staged + f["chunk"] * chunk)
    if proj:
        smem += kr * block_b * 4 * split + max(1, stages) * block_n * kr * elt * split
        regs += f["pointwise"] * 2 * block_n * block_b / threads
        if direction == "fwd":  # the W_hr phase runs with the next step's gx already loaded
            regs += f["piece"] * kr * block_b * split / threads + f["chunk"] * block_n * kr * split / threads
    return int(smem), int(regs)


def cta_w_elems(cell: str, direction: str, block_n: int, kp: int) -> int:
    """Elements of the W_hh a cta program keeps resident: the stacked gate slots forward
    (GS*BLOCK_N x KP), one BLOCK_N x KP block per gate backward."""
    return (gate_slots(cell) if direction == "fwd" else GATES[CELLS[cell]]) * block_n * kp


def resident_pieces_fp32(K: int, rows: int) -> tuple[int, int] | None:
    """(KP, NKP) of an fp32 forward's resident W_hh (resident_ok), or None: pieces of the widest
    power of two with KP <= `resident_fp32_kp_max` and KP x rows <= `resident_fp32_sweep` (rows:
    the batch rows in use, min(B, BLOCK_B)), at most `resident_pieces_max` of them, at least 16
    wide (tl.dot's K). Narrow pieces keep tf32x3's split operands small, and ptxas then issues
    every piece's exchange loads together after the poll."""
    t = TUNING
    kp = min(t["resident_fp32_kp_max"], _pow2(K, 16))
    while kp > 16 and kp * rows > t["resident_fp32_sweep"]:
        kp //= 2
    nkp = -(-K // kp)
    return (kp, nkp) if nkp <= t["resident_pieces_max"] else None


def resident_pieces_for(direction: str, K: int, block_b: int, G: int = 1, bits: int = 16,
                        rows: int = 0, split: bool = False) -> tuple[int, int] | None:
    """(KP, NKP) of a resident grid program's contraction: the forward's over K in pieces of
    at most `resident_staged_max` values (a wider piece spills: LSTM B16·H768, 1024 x 16 at 8
    warps, 464 bytes; 256 x 16, three pieces, none), the backward's over all G*K rows: in
    one piece where it stages at most `resident_bwd_staged_max` values (B1·H256), else in
    pieces as the forward's (GRU B16·H768: nine of 256, LSTM: twelve, 8 warps, no spill); `split`:
    the 16-bit backward in those pieces even where one would do (the candidates offer both, the model
    picks: RNN B16·H768, one piece of 1024 read 3 round trips and a chain of 128 mma, three pieces
    of 256 split in K 2 and 12), only where the one piece is at least `resident_bwd_split_min` wide;
    None where that is one piece or no one piece would do. fp32 (forward only):
    resident_pieces_fp32 for `rows` batch rows in use (0: block_b)."""
    if bits == 32 and direction == "fwd":
        return resident_pieces_fp32(K, rows or block_b)
    if bits == 32:  # the backward's pieces over all G*K rows, split in K (contract_split): several only
        # (unsplit, one piece of 128 at GRU B3·H33 loaded its one-word columns one by one: 11 round trips)
        kp = TUNING["resident_fp32_bwd_kp"]
        nkp = -(-(G * K) // kp)
        return (kp, nkp) if 2 <= nkp <= TUNING["resident_bwd_pieces_max"] else None
    if direction == "fwd":
        return resident_pieces(K, block_b, TUNING["resident_staged_max"])
    one = resident_pieces(G * K, block_b) if G * K * block_b <= TUNING["resident_bwd_staged_max"] else None
    if one is not None and not split:
        return one
    if split and (one is None or one[0] * one[1] < TUNING["resident_bwd_split_min"]):
        return None
    pieces = resident_pieces(G * K, block_b, TUNING["resident_staged_max"], TUNING["resident_bwd_pieces_max"])
    return None if split and pieces is not None and pieces[1] < 2 else pieces


def resident_split_fwd_ok(bits: int, K: int, block_b: int, block_n: int, GS: int, proj: int = 0,
                          extra_live: bool = False, rows: int = 0) -> tuple[int, int] | None:
    """(KP, NKP) of an fp32 forward whose W_hh stays resident in pieces split in K over 8 warps
    (steps.contract_split, as an fp32 backward's: pieces of `resident_fp32_bwd_kp`), or None. Only
    the RNN (one gate slot) in tiles of 8 units, 16 batch rows, without a projection or masks, where
    the narrow pieces for the `rows` batch rows in use (0: block_b) would be too many
    (resident_pieces_fp32): RNN B16·H768 compiled for sm_90 in 6
    pieces of 128 read 2 round trips, 201 registers, no spill (streamed: 8, 48 bytes spilled); the
    LSTM's and GRU's 32-row slices (tf32x3 halves: 192 KB of shared memory) spilled 88 and 64 bytes."""
    t = TUNING
    if (bits != 32 or GS != 1 or proj or extra_live or block_n > t["resident_pieces_bn_max"]
            or block_b != t["block_b_min"] or resident_pieces_fp32(K, rows or block_b) is not None):
        return None
    kp = t["resident_fp32_bwd_kp"]
    nkp = -(-K // kp)
    ok = 2 <= nkp <= t["resident_bwd_pieces_max"] and block_n * K * 4 <= t["resident_fp32_bwd_bytes"]
    return (kp, nkp) if ok else None


def resident_bwd_n8(bits: int, K: int, block_n: int, G: int, proj: int = 0,
                    extra_live: bool = False) -> tuple[int, int] | None:
    """(KP, NKP) of a 16-bit grid backward over a batch tile of 8 rows, W_hh resident in pieces of
    the 16-row tile's width (resident_pieces_for) split in K over 8 warps with W on the M side
    (steps.contract_split) in tiles of `resident_bwd_n8_bn` units, or None. Half the exchanged
    values per program: compiled for sm_90, the LSTM B16·H768 backward (two batch tiles of 8,
    48 x 2 programs, 12 pieces of 256) loads all 12 pieces in one sweep, 2 round trips, 243
    registers, no spill, where its 16-row tile took two sweeps and 4. Several pieces only, no
    projection, no extra live tiles (the masks, the reset-before GRU's second phase: untried)."""
    t = TUNING
    if bits != 16 or proj or extra_live or block_n != t["resident_bwd_n8_bn"]:
        return None
    pieces = resident_pieces(G * K, t["block_b_min"], t["resident_staged_max"], t["resident_bwd_pieces_max"])
    if pieces is None or pieces[1] < 2 or pieces[0] * pieces[1] * block_n * bits // 8 > t["resident_bwd_n8_bytes"]:
        return None
    return pieces


def resident_bwd_gates(cell: str) -> int:
    """The gates whose W_hh rows a resident grid backward's pieces cover in one contraction
    (steps.resident_w_bwd): all of them, but the reset-before GRU's r and z alone (the n gate's
    rows go through r ⊙ h in a contraction of their own, kernels.recurrence_bwd_kernel). Pieces
    over all three gates held a third of zeros: the B8·H256 backward spilled 24 bytes (sm_90)."""
    return 2 if cell == GRU_RESET_BEFORE else GATES[CELLS[cell]]


def resident_wide(direction: str, K: int, block_b: int, block_n: int, G: int = 1) -> tuple[int, int] | None:
    """(KP, NKP) of a 16-bit grid program that keeps its W_hh slice resident in a wide tile (at least
    `resident_wide_bn_min` units, run at `resident_wide_warps` warps), or None: the large shapes, where a
    batch tile's W_hh spreads over at most ~16-33 programs. Compiled for sm_90, each layout admitted here
    had no spill and issued all of a step's exchange loads in one sweep (2 round trips with the poll):
    forward, stacked rows on wgmma (GS*BLOCK_N a multiple of 64) up to `resident_wide_wgmma_bytes` with
    K <= `resident_wide_wgmma_k` (RNN B256·H512 64 x 512 in one piece of 512; LSTM and GRU 128 x 512 at
    32 batch rows in two of 256), on mma.sync only with 16 batch rows up to `resident_wide_mma_bytes` (RNN
    B64·H1024 32 x 1024 in two of 512), pieces of at most `resident_wide_staged_max` exchanged values,
    at most `resident_wide_sweep` in all (one sweep of loads);
    backward (16 batch rows, the slice G*K x BLOCK_N up to `resident_wide_mma_bytes`) in one piece where
    BLOCK_N is wgmma's 64 and the piece stages at most `resident_wide_staged_max` values (RNN B256·H512),
    else in pieces split in K over the warps (steps.contract_split; RNN B64·H1024, four of 256). What
    failed: RNN 64 x 1024 forward (616 bytes spilled at 8 warps), RNN 32 x 512 at 32 batch rows (8), LSTM
    128 x 512 in one piece of 512 (112, 3 round trips); K: the contraction per gate (P fwd, H bwd)."""
    t = TUNING
    if block_n < t["resident_wide_bn_min"] or (G if direction == "bwd" else 1) * K * block_b > t["resident_wide_sweep"]:
        return None
    if direction == "fwd":
        rows = (1 if G == 1 else 4) * block_n
        slice_bytes = rows * K * 2
        if rows % 64 == 0:
            ok = K <= t["resident_wide_wgmma_k"] and slice_bytes <= t["resident_wide_wgmma_bytes"]
        else:
            ok = block_b == t["block_b_min"] and slice_bytes <= t["resident_wide_mma_bytes"]
        return resident_pieces(K, block_b, t["resident_wide_staged_max"]) if ok else None
    if block_b != t["block_b_min"] or G * K * block_n * 2 > t["resident_wide_mma_bytes"]:
        return None
    if block_n % 64 == 0 and G * K * block_b <= t["resident_wide_staged_max"]:
        return resident_pieces(G * K, block_b, t["resident_wide_staged_max"], 1)
    pieces = resident_pieces(G * K, block_b, t["resident_staged_max"], t["resident_bwd_pieces_max"])
    return pieces if pieces is not None and pieces[1] > 1 else None


def resident_ok(direction: str, bits: int, K: int, block_b: int, block_n: int = 0, G: int = 1, proj: int = 0,
                extra_live: bool = False, n_piece: bool = False, rows: int = 0, split: bool = False) -> bool:
    """Whether a grid program may keep its W_hh slice resident: in the pieces of resident_pieces_for
    (narrow_ok; `split`: a 16-bit backward's split pieces) or, 16-bit without a projection, extra live
    tiles, the n gate's piece or `split`, in a wide tile (resident_wide)."""
    return (narrow_ok(direction, bits, K, block_b, block_n, G, proj, extra_live, n_piece, rows, split)
            or (bits == 16 and not (proj or extra_live or n_piece or split)
                and resident_wide(direction, K, block_b, block_n, G) is not None))


def resident_grid_pieces(direction: str, bits: int, K: int, block_b: int, block_n: int, G: int = 1,
                         rows: int = 0, split: bool = False) -> tuple[int, int, int, bool]:
    """(KP, NKP, fewest warps, wide) of a resident grid program that resident_ok admits (no projection,
    no extra live tiles where it is wide): the pieces of resident_pieces_for where narrow_ok holds, else
    resident_wide's at `resident_wide_warps` (wide: True; the register estimate's budget, set for the
    narrow layouts, does not apply to them: resident_wide admits only layouts compiled without a spill,
    211-255 registers where the linear fit gives 141-227)."""
    if narrow_ok(direction, bits, K, block_b, block_n, G, rows=rows, split=split):
        kp, nkp = resident_pieces_for(direction, K, block_b, G, bits, rows, split)
        split_k = direction == "bwd" and nkp > 1  # a backward's pieces: one K slice per warp
        return kp, nkp, TUNING["resident_bwd_pieces_warps"] if split_k else 4, False
    kp, nkp = resident_wide(direction, K, block_b, block_n, G)
    return kp, nkp, TUNING["resident_wide_warps"], True


def narrow_ok(direction: str, bits: int, K: int, block_b: int, block_n: int = 0, G: int = 1, proj: int = 0,
              extra_live: bool = False, n_piece: bool = False, rows: int = 0, split: bool = False) -> bool:
    """Whether a grid program may keep its W_hh slice resident in the pieces of resident_pieces_for
    (compile-gate findings on sm_90): in fp32 a forward's slice up to `resident_fp32_bytes` in tiles of at most
    `resident_pieces_bn_max` units, in the narrow pieces of resident_pieces_fp32 (`rows`: batch
    rows in use), without a projection or extra live tiles (untried: the plain kernels sit at
    255 registers); an fp32 backward's slice (G x K x BLOCK_N) up to `resident_fp32_bwd_bytes`
    in pieces of `resident_fp32_bwd_kp` split in K over 8 warps, with 16 batch rows, tiles of at
    most 8 units, no projection, no extra live tiles (B1·H256 and B8·H128: 94-236 registers, no
    spill; unsplit its ~24 live tiles beside tf32x3's split operands spilled). 16-bit only while the
    exchanged vector's piece staged per step stays small (resident_pieces_for); in several
    pieces only in tiles of `resident_pieces_bn_max` units (wider ones spill: RNN B16·H768 16
    units, 8 bytes; LSTM B64·H1024 32 x 16, 600), the backward's only with 16 batch rows and 8
    warps. The backward's slice is the transposed columns of all G gates, one contraction over
    G*K rows (steps.resident_w_bwd): resident only up to `resident_bwd_bytes` in one piece
    (the B1·H256 LSTM slice, 16 KB) and `resident_bwd_pieces_bytes` in several (the GRU
    and LSTM B16·H768 slices, 36 and 48 KB: each piece's product split in K over the 8
    warps, steps.contract_split; unsplit, the LSTM's spilled 64 bytes); larger ones stream from L2,
    as does every backward with a projection (its W_hr phase's registers make even the 16 KB
    slice spill), and every backward in several pieces with `extra_live` tiles: the reset-before
    GRU's second phase (B16·H768 in 9 pieces spilled 88 bytes) or the regularisers' masks (the
    LSTM B16·H768 in 12 pieces spills 24 bytes). n_piece: the reset-before GRU's backward
    also keeps its n gate's rows resident, one more piece of as many bytes (G: its r and z,
    resident_bwd_gates). K: the contraction's length per gate (P forward, H backward)."""
    if bits == 32:
        if proj or extra_live or block_n > TUNING["resident_pieces_bn_max"]:
            return False
        if direction == "bwd":
            return (block_b == TUNING["block_b_min"] and G * K * block_n * 4 <= TUNING["resident_fp32_bwd_bytes"]
                    and resident_pieces_for("bwd", K, block_b, G, 32) is not None)
        slots = 1 if G == 1 else 4
        return (slots * block_n * K * 4 <= TUNING["resident_fp32_bytes"]
                and resident_pieces_fp32(K, rows or block_b) is not None)
    if bits != 16:
        return False
    pieces = resident_pieces_for(direction, K, block_b, G, split=split and direction == "bwd")
    if pieces is not None and pieces[1] > 1 and (block_n > TUNING["resident_pieces_bn_max"]
                                                 or (direction == "bwd" and block_b > TUNING["block_b_min"])):
        return False
    if direction == "fwd":
        return pieces is not None
    if proj or pieces is None or (extra_live and pieces[1] > 1):
        return False
    limit = TUNING["resident_bwd_pieces_bytes" if pieces[1] > 1 else "resident_bwd_bytes"]
    return pieces[0] * (pieces[1] + n_piece) * block_n * bits // 8 <= limit


def _candidates(cell, B, H, bits, limits: DeviceLimits, direction, layout, proj, n_dir, regularised=False):
    """(layout, grid, BLOCK_B, BLOCK_N, KP, NKP, KR, N_TILES, RESIDENT, fewest warps, wide, SPLIT) of
    every structure that can run this call, with n_dir directions per launch (wide: resident_wide's)."""
    t = TUNING
    G, GS = GATES[CELLS[cell]], gate_slots(cell)
    P = proj or H
    K = P if direction == "fwd" else H  # W_hh's contraction
    g_res = resident_bwd_gates(cell) if direction == "bwd" else G
    block_bs = sorted({min(_pow2(B, t["block_b_min"]), b) for b in (16, 32, t["block_b_max"])
                       if b >= t["block_b_min"]})
    slots = limits.sms * t["programs_per_sm"]
    stream_kp = min(t["stream_kp"], _pow2(K, 16))
    kr = min(t["stream_kp"], _pow2(H if direction == "fwd" else P, 16)) if proj else 0
    cta_bs = sorted({min(_pow2(B, t["cta_block_b_min"]), b) for b in (16, 32, t["block_b_max"])})
    # a 16-bit grid backward also over batch tiles of 8 rows, its split pieces only (resident_bwd_n8), where
    # the batch fills more than one (at B <= 8 the 16-row tile's split and the cta layout are what was compiled)
    n8 = [8] if bits == 16 and direction == "bwd" and layout == "grid" and B > 8 else []
    for block_b in (cta_bs if layout == "cta" else n8 + block_bs):
        n_b = -(-B // block_b)
        if layout == "cta":
            bn, kp = _pow2(H, 16), _pow2(P, 16)
            # the LSTM backward's cta tile (four W_hh blocks and ~24 live tiles) spills on
            # sm_90 with 16 batch rows at every H compiled (33, 128); with 8 rows and 8 warps
            # B8·H128 (1024 elements) does not: larger ones exchange through memory instead
            lstm_bwd_ok = bn * block_b <= t["cta_lstm_bwd_elems"] and not proj
            # fp32 keeps both tf32x3 halves of the resident W_hh (and W_hr) in registers: small ones only
            small_w = (bits == 16 or GS * bn * kp + (kp * bn if proj else 0) <= 32 * 128
                       or (GS == 1 and bn * kp <= t["cta_rnn_fp32_w"]))
            if bn <= t["cta_max"] and (lstm_bwd_ok or not (cell == "lstm" and direction == "bwd")) and small_w:
                yield "cta", (1, n_b, n_dir), block_b, bn, kp, 1, 0, 1, True, 4, False, False
            continue
        for bn in t["block_n"]:
            n_units = -(-H // bn)
            if bn > _pow2(H, 8) or (layout == "grid" and n_units < 2):
                continue
            if layout == "solo":
                yield "solo", (1, n_b, n_dir), block_b, bn, stream_kp, 1, kr, n_units, False, 4, False, False
                continue
            n_n = min(n_units, slots // (n_b * n_dir))  # every direction's programs co-resident
            if n_n < 2:
                continue
            n_tiles = -(-n_units // n_n)
            n_n = -(-n_units // n_tiles)
            rows = min(B, block_b)
            split_warps = t["resident_bwd_pieces_warps"]  # pieces split in K: one K slice per warp
            if block_b < t["block_b_min"]:
                pieces = resident_bwd_n8(bits, K, bn, g_res, proj, cell == GRU_RESET_BEFORE or regularised)
                if n_tiles == 1 and pieces:
                    yield "grid", (n_n, n_b, n_dir), block_b, bn, *pieces, kr, 1, True, split_warps, False, False
                continue
            # a 16-bit backward whose slice fits one piece may also run it in pieces split in K
            for split in ((False, True) if bits == 16 and direction == "bwd" else (False,)):
                if n_tiles == 1 and resident_ok(direction, bits, K, block_b, bn, g_res, proj,
                                                cell == GRU_RESET_BEFORE or regularised,
                                                cell == GRU_RESET_BEFORE and direction == "bwd", rows, split):
                    kp, nkp, warps_min, wide = resident_grid_pieces(direction, bits, K, block_b, bn, g_res, rows,
                                                                    split)
                    yield "grid", (n_n, n_b, n_dir), block_b, bn, kp, nkp, kr, 1, True, warps_min, wide, False
            split_fwd = direction == "fwd" and n_tiles == 1 and resident_split_fwd_ok(
                bits, K, block_b, bn, GS, proj, cell == GRU_RESET_BEFORE or regularised, rows)
            if split_fwd:
                yield "grid", (n_n, n_b, n_dir), block_b, bn, *split_fwd, kr, 1, True, split_warps, False, True
            yield "grid", (n_n, n_b, n_dir), block_b, bn, stream_kp, 1, kr, n_tiles, False, 4, False, False


def layout_name(name: str) -> str:
    """A layout's name (or "auto"), an earlier name (RENAMED_LAYOUTS) translated with a FutureWarning."""
    if name in RENAMED_LAYOUTS:
        new = RENAMED_LAYOUTS[name]
        warnings.warn(f"fusedrnn triton: the layout {name!r} is now called {new!r} (one name per tier with the "
                      f"CUDA backend); {name!r} is accepted until the next release", FutureWarning, stacklevel=3)
        return new
    return name


def candidates(cell: str, B: int, H: int, dtype: torch.dtype, limits: DeviceLimits = H100,
               direction: str = "fwd", layout: str | None = None, proj: int = 0, directions: int = 1,
               regularised: bool = False) -> list:
    """Every configuration the choice code considers for this call that fits the device
    (estimated registers and shared memory), each with its predicted µs per step.

    layout None takes TUNING["layout"]: "auto" (on a GPU every layout; under the
    interpreter cta and solo, never a barrier) or one forced layout. proj: the LSTM
    projection's size (0: none). directions 2: both directions in one launch, and each
    configuration also as two launches in turn (its time doubled)."""
    layout = layout_name(layout or TUNING["layout"])
    if layout not in ("auto",) + LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected auto or one of {', '.join(LAYOUTS)}")
    if proj and cell != "lstm":
        raise ValueError(f"a projection (proj_size) applies to the LSTM only, not {cell}")
    bits = torch.finfo(dtype).bits
    G, GS = GATES[CELLS[cell]], gate_slots(cell)
    smem_cap = limits.smem_optin - TUNING["smem_margin"]
    tried = [layout] if layout != "auto" else (["cta", "solo"] if INTERPRET else list(LAYOUTS))
    found, wide_found = [], []
    for n_dir in sorted({directions, 1}, reverse=True):
        for name in tried:
            for lay, grid, block_b, bn, kp, nkp, kr, n_tiles, resident, warps_min, wide, split in _candidates(
                    cell, B, H, bits, limits, direction, name, proj, n_dir, regularised):
                for warps in (4, 8):
                    if warps < warps_min:
                        continue
                    stages = TUNING["num_stages"]
                    w_max = TUNING["cta_w_per_thread" if bits == 16 else "cta_w_per_thread_fp32"] * 32 * warps
                    if lay == "cta" and cta_w_elems(cell, direction, bn, kp) > w_max:
                        continue
                    if (lay == "cta" and regularised and bits == 16 and cta_w_elems(cell, direction, bn, kp) >= w_max
                            and bn * block_b > TUNING["cta_regularised_tile"] * 32 * warps):
                        continue
                    smem, regs = resources(cell, direction, bits, block_b, bn, kp, nkp, resident, warps, stages,
                                           lay == "cta", proj, kr)
                    if smem > smem_cap or (regs > TUNING["regs_budget"] and not wide):
                        continue
                    m_rows = GS * bn if direction == "fwd" else bn
                    us = model.step_us(lay, grid[0], n_tiles, bn, block_b, GS, kp, nkp, resident, B, H, G, bits,
                                       direction, uses_wgmma(m_rows, block_b, warps), proj=proj, kr=kr,
                                       directions=n_dir, warps=warps,
                                       second_phase=cell == GRU_RESET_BEFORE, split=split)["total"] * (
                                           directions // n_dir)
                    (wide_found if wide else found).append(
                        Launch(lay, grid, block_b, bn, kp, nkp, n_tiles, resident, warps, stages, smem, regs, us, kr,
                               bool(proj), directions, split))
                    break  # fewer warps when they fit
    # a wide resident tile only where no layout keeps W_hh resident in the narrow pieces (the large
    # shapes): resident_wide's findings were compiled there, not beside the narrow pieces' shapes
    if any(c.RESIDENT and c.layout == "grid" for c in found):
        return found
    return found + wide_found


def choose(cell: str, B: int, H: int, dtype: torch.dtype, limits: DeviceLimits = H100, direction: str = "fwd",
           layout: str | None = None, proj: int = 0, directions: int = 1, regularised: bool = False) -> Launch:
    """The launch of a recurrence of `cell`, batch B, hidden H in `dtype` on a device with
    `limits`, for the forward or backward kernel ("fwd" | "bwd"), with an LSTM projection
    of size `proj` (0: none) and 1 or 2 directions: the candidate the latency model
    predicts fastest (ties: fewer warps, then fewer programs, then one launch). A forced
    layout that cannot run here (e.g. cta at a large H) leaves the automatic choice;
    the solo layout always has a candidate, so some launch always fits. regularised: with the
    masks of zoneout or recurrent dropout (their registers: see resident_ok)."""
    found = candidates(cell, B, H, dtype, limits, direction, layout, proj, directions, regularised)
    if not found and (layout or TUNING["layout"]) != "auto":
        found = candidates(cell, B, H, dtype, limits, direction, "auto", proj, directions, regularised)
    if not found:
        raise RuntimeError(f"fusedrnn triton: no configuration fits for {cell} B={B} H={H} P={proj} D={directions} "
                           f"{dtype} ({direction}); the tuning table is inconsistent")
    return min(found, key=lambda c: (c.us_per_step, c.num_warps, c.grid[0] * c.grid[1], c.launches))
