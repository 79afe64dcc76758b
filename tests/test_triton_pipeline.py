"""The software-pipelined streamed contraction (steps.contract_fwd / contract_bwd): two
slots of W_hh and exchanged-vector chunks in flight, each refilled with chunk j+2 right
after chunk j's product (no rotation of registers, which would wait for the loads just
issued), and the backward's products alternating between two accumulators. The layout
tests' sizes fit in one chunk, so here the chunk is narrowed to 16 columns: K = 40 runs as
16 + 16 + 8 (a partial last chunk, then one all-masked chunk to fill the second slot), the
backward as G x 3 (gate, chunk) pieces, and a chunk consumed before its load, twice, or
never (a stale slot: planted below), or an accumulator left out, breaks a value or a
gradient against the float64 reference. Grid programs run concurrently
(tests/support/interpreter_threads.py), so the pipelined loads also meet the barrier's exchange.
"""
from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from fusedrnn.ops.triton import config, kernels, steps
from fusedrnn.ops.triton.steps import chunk_bwd, chunk_fwd, resident_w_bwd
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
    """Stores three chunks past the backward's last one (its pipeline loads up to two)."""
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
    """The pipeline loads up to two chunks past the last (multiplied at most as zeros, so no
    value shows them): they must stay inside W and d, fully masked. W and d sit in buffers whose tail
    is NaN, so a chunk that read past them (gate G) would not be all zeros."""
    N, K, BN, BB = 16, 40, 16, 16
    w_buf = torch.full((G * K * N + 4 * K * N,), float("nan"))
    w_buf[:G * K * N] = 1.0
    d_buf = torch.full((BB * G * K + 4 * K * BB,), float("nan"))
    d_buf[:BB * G * K] = 1.0
    out = torch.full((6, KP * BN), -1.0)
    _past_end_chunks[(1,)](w_buf, d_buf, out, N, K, G, KP, BN, BB)
    assert torch.equal(out, torch.zeros_like(out)), out


@triton.jit
def _stale_chunk_fwd(p_x, o_rx, m_b, p_w, n0, j, N, K, G: tl.constexpr, GS: tl.constexpr, BLOCK_N: tl.constexpr,
                     KP: tl.constexpr):
    """Planted bug: a slot refilled with the chunk it held (j - 2) instead of chunk j."""
    return chunk_fwd(p_x, o_rx, m_b, p_w, n0, j % 2, N, K, G, GS, BLOCK_N, KP)


@triton.jit
def _gate0_w_bwd(p_w, o_n, N, GK, KP: tl.constexpr, NKP: tl.constexpr):
    """Planted bug: a resident backward's W covering only the first gate's rows (per-gate
    pieces where the contraction runs over all G*H rows)."""
    return resident_w_bwd(p_w, o_n, N, GK // 3, KP, NKP)


def test_a_stale_slot_fails_the_reference(monkeypatch):
    """The reference check sees a slot that is not refilled (chunks 0 and 1 multiplied again
    in place of 2 and 3): the pipeline's refills are what the numbers depend on."""
    if not config.INTERPRET:
        pytest.skip("plants a bug into the interpreted kernel")
    launch = streamed("lstm", "solo", torch.float32)
    monkeypatch.setattr(steps, "chunk_fwd", _stale_chunk_fwd)
    with forced(monkeypatch, launch), pytest.raises(AssertionError):
        check_against_reference("lstm", 3, B, H, lengths=False, reverse=False, dtype=torch.float32, bias=True, seed=7)


def test_a_resident_backward_short_of_g_h_rows_fails_the_reference(concurrent, monkeypatch):  # noqa: F811
    """The resident grid backward contracts over all G*H rows of W_hh in one piece: one that
    covered a single gate's rows breaks the gradients (GRU, G = 3)."""
    if not config.INTERPRET:
        pytest.skip("plants a bug into the interpreted kernel")
    found = [c for c in config.candidates("gru", B, H, torch.bfloat16, SMALL_DEVICE, "bwd", "grid") if c.RESIDENT]
    launch = min(found, key=lambda c: c.grid[0])
    assert launch.NKP == 1 and launch.KP >= 3 * H
    monkeypatch.setattr(kernels, "resident_w_bwd", _gate0_w_bwd)
    with forced(monkeypatch, launch), pytest.raises(AssertionError, match="d_"):
        check_against_reference("gru", 3, B, H, lengths=False, reverse=False, dtype=torch.bfloat16, bias=True,
                                seed=7)
