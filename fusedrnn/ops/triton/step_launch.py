"""Launcher of the fused decode step (step_kernel.py): the argument checks, the geometry
(`step_launch_config`, which the compile gate compiles too) and the one launch.

Dimensions: B batch, I input width, H hidden units, G gates.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..common import GATES, INT32_MAX
from ..step_args import check as check_step_args  # one set of checks and messages for every backend's step
from . import config, launch, step_kernel
from .cells import CELLS


class StepLaunch(NamedTuple):
    BLOCK_N: int   # units per program (grid axis 0)
    BLOCK_B: int   # batch rows per program (grid axis 1)
    KC: int        # contraction chunk
    num_warps: int
    num_stages: int

    def grid(self, B: int, H: int) -> tuple[int, int]:
        return _cdiv(H, self.BLOCK_N), _cdiv(B, self.BLOCK_B)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def step_launch_config(cell: str, dtype: torch.dtype, B: int, I: int, H: int) -> StepLaunch:
    """The step's geometry. Decoding is bound by reading the weights once: units per program
    shrink until the grid has ~128 programs along H (an H100 has 132 SMs), down to the MMA's
    16 rows of stacked gate slots; the batch tile covers B up to 64 rows (16 at least: the
    MMA's N), so each weight byte is read once for B <= 64."""
    gs = 1 if GATES[cell] == 1 else 4
    block_n = max(16 // gs, min(16, _pow2_at_least(_cdiv(H, 128))))
    block_b = max(16, min(64, _pow2_at_least(B)))
    kc = min(32 if dtype == torch.float32 else 128, max(16, _pow2_at_least(max(I, H))))
    return StepLaunch(block_n, block_b, kc, num_warps=4, num_stages=4)


def step_args(cell, B, I, H, x, h0, c0, w_ih, w_hh, b_ih, b_hh, h, c, lau: StepLaunch):
    """(positional args, keyword args) of cell_step_kernel; absent optional tensors are
    replaced by stand-ins of the same element type (one compiled kernel for every variant).
    The compile gate passes `triton.runtime.jit.MockTensor`s."""
    prec = "ieee" if config.INTERPRET else "tf32x3"
    args = (x, h0, c0 if c0 is not None else h0, w_ih, w_hh, b_ih if b_ih is not None else w_ih,
            b_hh if b_hh is not None else w_hh, h, c if c is not None else h, B, I, H, int(b_ih is not None),
            int(b_hh is not None))
    kw = dict(CELL=CELLS[cell], BLOCK_N=lau.BLOCK_N, BLOCK_B=lau.BLOCK_B, KC=lau.KC, PREC=prec,
              INTERP=config.INTERPRET, num_warps=lau.num_warps, num_stages=lau.num_stages,
              **config.FP_FUSION)
    return args, kw


def step(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """One fused step of a cell (fusedrnn/ops/cell_step.py): (h (B,H), c (B,H) or None).

    x (B,I) · h0 (B,H) · c0 (B,H) LSTM only · w_ih (G*H,I) · w_hh (G*H,H) · b_ih, b_hh (G*H,) or
    None, all of one float dtype on one device. One launch; nothing is allocated but h and c
    and nothing synchronises: a CUDA graph can capture it."""
    lstm = cell == "lstm"
    B, I, H = check_step_args(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    GH = GATES[cell] * H
    dt, dev = x.dtype, x.device
    if dt not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"step: the Triton kernels take float32, bfloat16 or float16, not {dt}")
    for what, n in (("G*H*I (w_ih)", GH * I), ("G*H*H (w_hh)", GH * H), ("B*I (x)", B * I), ("B*H (h0)", B * H)):
        if n > INT32_MAX:
            raise ValueError(f"step: the Triton kernel indexes with 32-bit offsets, but {what} = {n} elements "
                             f"exceeds {INT32_MAX}")
    x, h0, w_ih, w_hh = x.contiguous(), h0.contiguous(), w_ih.contiguous(), w_hh.contiguous()
    c0, b_ih, b_hh = (t.contiguous() if t is not None else None for t in (c0, b_ih, b_hh))
    h = launch.new_out((B, H), dt, dev)
    c = launch.new_out((B, H), dt, dev) if lstm else None
    lau = step_launch_config(cell, dt, B, I, H)
    args, kw = step_args(cell, B, I, H, x, h0, c0, w_ih, w_hh, b_ih, b_hh, h, c, lau)
    if B and H:  # an empty batch launches nothing
        step_kernel.cell_step_kernel[lau.grid(B, H)](*args, **kw)
    return h, c
