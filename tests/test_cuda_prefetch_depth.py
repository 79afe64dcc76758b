"""The persistent CUDA kernel's inputs loaded two steps ahead (csrc/persistent.cuh, passes.cuh):
the step loop runs two steps per iteration, step s consuming the registers of parity s % 2 and
refilling them with step s + 2's inputs (forward: gx; backward: dy and the saved activations).
A step that read the other parity's registers, or a refill that loaded the wrong step, shows as
a wrong output or gradient from the second step on; so the sequences here have odd and even
lengths (T = 1 .. 5, sequences ending at odd and even steps inside one batch), both directions,
in the emulated build (tools/cuda_emu) against the float64 reference."""
from __future__ import annotations

import pytest
import torch

from fusedrnn.ops import cuda
from support import contract
from support.emulated import check

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")

# (T, reverse, lengths, D): T = 1 (one step, no second buffer in use), even and odd T, sequence
# ends at every parity (lengths 1..T unsorted), reversed, both directions in one launch
SEQUENCES = [
    (1, False, None, 1),
    (2, True, None, 1),
    (3, False, (3, 2, 1), 1),
    (4, True, (4, 1, 3), 1),
    (5, False, (2, 5, 3), 1),
    (5, True, (5, 4, 1), 2),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_each_step_reads_its_own_inputs(emu, knobs, cell, dtype):
    knobs()
    for T, reverse, lengths, D in SEQUENCES:
        check(contract.Case(cell, D, reverse and D == 1, lengths=lengths, T=T), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_each_step_reads_its_own_inputs_with_a_projection(emu, knobs, dtype):
    """The LSTM with a projection: two stages per step, dy and the saved values loaded in different stages."""
    knobs()
    for T, reverse, lengths, D in SEQUENCES:
        check(contract.Case("lstm", D, reverse and D == 1, proj=True, lengths=lengths, T=T), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_each_step_reads_its_own_inputs_across_a_cluster(emu, knobs, dtype):
    """The same across CTAs (the cluster tier, H split over 3 CTAs, B over two batch groups):
    the loads follow the publish there, so a refill racing the exchange would show."""
    knobs("cluster", 8, 8, 0)
    for cell in ("lstm", "gru"):
        lay = cuda.plan_for(cell, dtype, 11, 24, mode="cluster", units=8, batch_rows=8)["layout"]
        assert lay["NU"] == 3 and lay["NBG"] == 2, lay
        check(contract.Case(cell, 1, False, lengths=(5, 2, 3, 4, 1, 5, 2, 3, 4, 1, 5), T=5, B=11, H=24), dtype)
