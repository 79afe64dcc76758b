"""The cta layout's step inputs loaded two steps ahead (kernels.py, AHEAD = model.CTA_PREFETCH_AHEAD):
gx forward, dy with the saved activations and state backward, and the zoneout masks, in two
buffers that swap each step (on a GPU the step loop is unrolled by two, its remainder running
an odd T's last step). Against the float64 reference, values and every gradient, at T = 1 to 5
(a wrong buffer, or a step's inputs taken one step early or late, shows from T = 2), batch 3
(5 padded rows), odd H, with lengths (rows past their length) and reverse, in fp32 and bf16.
"""
from __future__ import annotations

import pytest
import torch

from fusedrnn.ops.triton import config, model
from support.triton_layouts import SMALL_DEVICE, forced
from support.triton_recurrence import check_against_reference
from test_triton_regularisers import check_layer

B, H = 3, 5


def cta_launch(cell, dtype):
    launch = config.candidates(cell, B, H, dtype, SMALL_DEVICE, "fwd", "cta")[0]
    assert launch.CARRY and launch.N_TILES == 1
    return launch


def test_the_cta_inputs_run_two_steps_ahead():
    assert model.CTA_PREFETCH_AHEAD == 2 and model.CTA_PREFETCH_TRIPS == 0.5


@pytest.mark.parametrize("cell", ("rnn_tanh", "gru", "lstm", "gru_reset_before"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=("fp32", "bf16"))
def test_cta_inputs_two_steps_ahead(monkeypatch, cell, dtype):
    with forced(monkeypatch, cta_launch(cell, dtype)):
        for T, lengths, reverse in ((2, False, False), (3, True, True), (4, True, False), (5, False, True)):
            check_against_reference(cell, T, B, H, lengths, reverse, dtype, bias=True, seed=T)


@pytest.mark.parametrize("cell,dtype", [("gru", torch.bfloat16), ("lstm", torch.float32),
                                        ("gru_reset_before", torch.float32), ("rnn_tanh", torch.bfloat16)])
def test_cta_masks_two_steps_ahead(monkeypatch, cell, dtype):
    """Zoneout (of h, and of the LSTM's c) and recurrent dropout: the masks ride the same buffers."""
    with forced(monkeypatch, cta_launch(cell, dtype)):
        for T, lengths, reverse in ((1, False, False), (2, True, True), (3, True, False)):
            check_layer(cell, B, H, T, lengths, reverse, dtype, seed=10 + T)
