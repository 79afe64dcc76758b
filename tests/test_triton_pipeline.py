"""The software-pipelined streamed contraction (steps.contract_fwd / contract_bwd): chunk
k+1 of W_hh and of the exchanged vector is loaded before chunk k's product, and the
backward's products alternate between two accumulators. The layout tests' sizes fit in
one chunk, so here the chunk is narrowed to 16 columns: K = 40 runs as 16 + 16 + 8 (a
partial last chunk), the backward as G x 3 (gate, chunk) pieces, and a chunk consumed
before its load, twice, or never, or an accumulator left out, breaks a value or a
gradient against the float64 reference. Grid programs run concurrently
(tests/interpreter_threads.py), so the pipelined loads also meet the barrier's exchange.
"""
from __future__ import annotations

import pytest
import torch

from fusedrnn.ops.triton import config
from test_triton_layouts import SMALL_DEVICE, concurrent, forced  # noqa: F401 (fixture)
from test_triton_recurrence import check_against_reference

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
