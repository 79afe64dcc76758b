"""Launch configuration of the fused recurrence kernels: the tuning table, the choice
between the barrier grid and the no-barrier grid, and buffer allocation.

Dimensions: B batch, H hidden units, G gates. A program owns BLOCK_B batch rows and
N_TILES tiles of BLOCK_N hidden units (all G gates of each unit), so the pointwise
update needs no exchange; only h_t (forward) or the gate gradients (backward) are
exchanged through global memory, once per step.

Two grids:
- barrier grid (GPU only): cdiv(H, BLOCK_N) programs per batch tile, one tile each,
  meeting at a grid barrier per step. Every program must be resident at once, so the
  grid is at most (SM count x PROGRAMS_PER_SM) programs.
- no-barrier grid: one program per batch tile loops over all of H (N_TILES tiles);
  it needs only a CTA barrier per step. The interpreter always runs this one.
No autotuning: the choice depends on H, the batch, the dtype and the SM count only,
never on T, and nothing runs at import.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

#: Triton decides at import whether kernels run in the CPU interpreter.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: Every tuning constant of the kernels, in one place.
TUNING = {
    "block_b_min": 16,            # tl.dot needs M >= 16
    "block_b_max": 64,            # batch rows per program
    "block_n_min": 16,            # tl.dot needs N >= 16; hidden units per tile on the barrier grid
    "no_barrier_block_n": 64,     # hidden units per tile when one program loops over all of H
    "block_k": 64,                # contraction chunk when W_hh is streamed from L2 each step
    "resident_bytes": 64 * 1024,  # W_hh slice a program may keep in registers across steps
    "programs_per_sm": 1,         # co-residency bound of the barrier grid
    "warps_small": 4,
    "warps_large": 8,             # when the resident W slice exceeds half of resident_bytes
    "use_barrier": True,          # False: the no-barrier grid everywhere (tests, debugging)
    "spin_limit": 1 << 24,        # barrier spins before giving up (~seconds; a step is ~µs)
}

#: debug/test switch: allocate every output NaN-filled so an unwritten element shows, and
#: check after each barrier-grid launch that no barrier timed out (costs a host sync).
DEBUG = os.environ.get("FUSEDRNN_DEBUG", "0") == "1"

TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


class Launch(NamedTuple):
    grid: tuple
    BLOCK_B: int
    BLOCK_N: int
    BLOCK_K: int
    N_TILES: int
    RESIDENT: bool
    BARRIER: bool
    num_warps: int


def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _pow2(n: int, lo: int) -> int:
    return max(lo, triton.next_power_of_2(n))


def choose(G: int, B: int, H: int, dtype: torch.dtype, device: torch.device,
           barrier_ok: bool = True) -> Launch:
    """The launch for a recurrence of G gates, batch B, hidden H (forward and backward alike)."""
    t = TUNING
    block_b = min(_pow2(B, t["block_b_min"]), t["block_b_max"])
    n_b = triton.cdiv(B, block_b)
    h_pad = _pow2(H, t["block_n_min"])
    block_n, n_n = None, 1
    if barrier_ok and t["use_barrier"] and not INTERPRET and device.type == "cuda":
        slots = _sm_count(device) * t["programs_per_sm"]
        n = t["block_n_min"]
        while n < h_pad and n_b * triton.cdiv(H, n) > slots:
            n *= 2
        if n < h_pad:  # several programs share the hidden units of a batch tile
            block_n, n_n = n, triton.cdiv(H, n)
    if block_n is None:  # no barrier: one program per batch tile walks over all of H
        block_n = min(h_pad, _pow2(t["no_barrier_block_n"], t["block_n_min"]))
    n_tiles = triton.cdiv(H, block_n * n_n)
    w_bytes = G * h_pad * block_n * torch.finfo(dtype).bits // 8
    resident = n_tiles == 1 and w_bytes <= t["resident_bytes"]
    block_k = h_pad if resident else min(h_pad, _pow2(t["block_k"], 16))
    warps = t["warps_large"] if resident and 2 * w_bytes > t["resident_bytes"] else t["warps_small"]
    return Launch((n_n, n_b), block_b, block_n, block_k, n_tiles, resident, n_n > 1, warps)


def new_out(shape, dtype, device) -> torch.Tensor:
    """An output buffer the kernel fully writes (NaN-filled under DEBUG)."""
    if DEBUG:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def counters(launch: Launch, device) -> torch.Tensor:
    """One zeroed barrier counter per batch tile, then the barrier-timeout flag."""
    return torch.zeros(launch.grid[1] + 1, dtype=torch.int32, device=device)


def check_barrier(launch: Launch, cnt: torch.Tensor) -> None:
    """In DEBUG mode, raise if a grid barrier of the launch that used `cnt` timed out."""
    if DEBUG and launch.BARRIER and int(cnt[-1]) != 0:
        raise RuntimeError("fusedrnn triton: a grid barrier timed out; were all programs co-resident? "
                           f"(grid {launch.grid})")


def kernel_args(launch: Launch) -> dict:
    """The constexpr/launch keywords every kernel takes."""
    return dict(BLOCK_B=launch.BLOCK_B, BLOCK_N=launch.BLOCK_N, BLOCK_K=launch.BLOCK_K,
                N_TILES=launch.N_TILES, RESIDENT=launch.RESIDENT, BARRIER=launch.BARRIER,
                SPIN_LIMIT=TUNING["spin_limit"], INTERP=INTERPRET, num_warps=launch.num_warps)
