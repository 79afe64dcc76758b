"""The software-pipelined streamed contraction (steps.contract_fwd / contract_bwd): chunk
j+3 of W_hh and of the exchanged vector is loaded before chunk j's product, and the
backward's products alternate between two accumulators. The layout tests' sizes fit in
one chunk, so here the chunk is narrowed to 16 columns: K = 40 runs as 16 + 16 + 8 (a
partial last chunk), the backward as G x 3 (gate, chunk) pieces, and a chunk consumed
before its load, twice, or never, or an accumulator left out, breaks a value or a
gradient against the float64 reference. Grid programs run concurrently
(tests/support/interpreter_threads.py), so the pipelined loads also meet the barrier's exchange.
"""
from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from fusedrnn.ops.triton import config
from fusedrnn.ops.triton.steps import chunk_bwd
from support.triton_layouts import SMALL_DEVICE, forced
from support.triton_recurrence import check_against_reference

KP = 16
B, H = 3, 40


def streamed(cell: str, layout: str, dtype) -> config.Launch:
    found = [c for c in config.candidates(cell, B, H, dtype, SMALL_DEVICE, "fwd", layout) if not c.RESIDENT]
    launch = min(found, key=lambda c: (c.N_TILES, c.grid[0]))
    assert -(-H // KP) == 3 and launch.KP > KP  # narrowed: several chunks, the last one partial
    return launch._replace(KP=KP)


@pytest.mark.parametrize("cell,layout,dtype", [
    ("lstm", "grid", torch.float32), ("gru", "grid", torch.bfloat16), ("rnn_tanh", "grid", torch.float16),
    ("lstm", "solo", torch.bfloat16), ("gru", "solo", torch.float32), ("rnn_relu", "solo", torch.float32)])
def test_pipelined_chunks_match_reference(concurrent, monkeypatch, cell, layout, dtype):  # noqa: F811
    launch = streamed(cell, layout, dtype)
    with forced(monkeypatch, launch):
        check_against_reference(cell, 5, B, H, lengths=True, reverse=layout == "solo", dtype=dtype, bias=True,
                                seed=7)


@triton.jit
def _past_end_chunks(p_w, p_d, p_out, N, K, G: tl.constexpr, KP: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_B: tl.constexpr):
    """Stores the three chunks the backward's pipeline loads past its last one."""
    o_n = tl.arange(0, BLOCK_N)
    o_b = tl.arange(0, BLOCK_B)
    n_k = tl.cdiv(K, KP)
    for i in tl.static_range(3):
        w, x = chunk_bwd(p_d, o_b * (G * K), o_b < 1, p_w, o_n, G * n_k + i, n_k, N, K, G, KP)
        tl.store(p_out + i * 2 * KP * BLOCK_N + tl.arange(0, BLOCK_N)[:, None] * KP + tl.arange(0, KP)[None, :],
                 w.to(tl.float32))
        tl.store(p_out + (i * 2 + 1) * KP * BLOCK_N + tl.arange(0, KP)[:, None] * BLOCK_B + o_b[None, :], x)


@pytest.mark.parametrize("G", [1, 3, 4])
def test_chunks_past_the_end_read_nothing(G):
    """The pipeline loads three chunks past the last (never multiplied, so no value shows
    them): they must stay inside W and d, fully masked. W and d sit in buffers whose tail
    is NaN, so a chunk that read past them (gate G) would not be all zeros."""
    N, K, BN, BB = 16, 40, 16, 16
    w_buf = torch.full((G * K * N + 4 * K * N,), float("nan"))
    w_buf[:G * K * N] = 1.0
    d_buf = torch.full((BB * G * K + 4 * K * BB,), float("nan"))
    d_buf[:BB * G * K] = 1.0
    out = torch.full((6, KP * BN), -1.0)
    _past_end_chunks[(1,)](w_buf, d_buf, out, N, K, G, KP, BN, BB)
    assert torch.equal(out, torch.zeros_like(out)), out
