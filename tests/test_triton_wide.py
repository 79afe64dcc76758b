"""W_hh resident in wide tiles (config.resident_wide: 32-64 units per program at the large shapes),
forced onto small grids under the threaded interpreter and compared with the float64 reference,
values and every gradient.

The launches are the ones config.choose picks at the large anchors (B256·H512, B64·H1024), with
their tile shapes, batch rows and warps kept and only the pieces cut to the small H: a forward in
one piece of a 64-unit tile and in two pieces of a 32-unit tile (every piece held behind the last
load, tiles.behind), a backward in one piece of a 64-unit tile and in pieces split in K over the
warps of a 32-unit tile (steps.contract_split), for the RNN, GRU and LSTM.
"""
from __future__ import annotations

import pytest
import torch

from fusedrnn.ops.triton import config
from support.triton_recurrence import check_against_reference

#: (cell, the anchor whose chosen launch is run (B, H), the small B and H (B20: two batch tiles of 16),
#: its forward and backward pieces' KP, lengths, reverse)
CASES = (("rnn_tanh", (256, 512), 20, 72, 128, 128, False, True),  # 64-unit tile: one piece forward and backward
         ("rnn_tanh", (64, 1024), 3, 40, 32, 16, True, False),     # 32-unit tile: two pieces forward, three split
         ("lstm", (256, 512), 20, 40, 32, 16, True, True),         # 128 stacked rows in two pieces; ten split
         ("gru", (256, 512), 3, 40, 32, 16, False, False))


def wide_launch(cell, anchor, H, kp, direction):
    """config.choose's launch at the anchor for `direction` (a wide resident tile; the LSTM's and GRU's
    backward take the RNN B64·H1024 backward's split tile, which they would run at H256), its
    pieces cut to H: KP wide, as many as cover the contraction (the backward's all G*H rows)."""
    source = cell if direction == "fwd" or cell == "rnn_tanh" else "rnn_tanh"
    B_a, H_a = anchor if source == cell else (64, 1024)
    # layout "grid": under the interpreter "auto" never takes a barrier (config.candidates)
    launch = config.choose(source, B_a, H_a, torch.bfloat16, config.H100, direction, "grid")
    assert launch.RESIDENT and launch.BLOCK_N >= config.TUNING["resident_wide_bn_min"], launch
    assert launch.num_warps == config.TUNING["resident_wide_warps"], launch
    K = H * (config.resident_bwd_gates(cell) if direction == "bwd" else 1)
    return launch._replace(grid=(-(-H // launch.BLOCK_N), 1, 1), KP=kp, NKP=-(-K // kp))


@pytest.mark.parametrize("cell,anchor,B,H,kp_fwd,kp_bwd,lengths,reverse", CASES,
                         ids=[f"{c[0]}-B{c[1][0]}H{c[1][1]}" for c in CASES])
def test_wide_resident_tiles_match_the_reference(concurrent, monkeypatch, cell, anchor, B, H, kp_fwd,
                                                 kp_bwd, lengths, reverse):
    fwd = wide_launch(cell, anchor, H, kp_fwd, "fwd")
    bwd = wide_launch(cell, anchor, H, kp_bwd, "bwd")
    n_b = -(-B // fwd.BLOCK_B)
    fwd, bwd = fwd._replace(grid=(fwd.grid[0], n_b, 1)), bwd._replace(grid=(bwd.grid[0], -(-B // bwd.BLOCK_B), 1))
    assert fwd.grid[0] >= 2 and bwd.grid[0] >= 2  # programs exchange through memory at the grid barrier

    def choose(cell_, B_, H_, dtype, limits=None, direction="fwd", *args, **kwargs):
        return fwd if direction == "fwd" else bwd
    monkeypatch.setattr(config, "choose", choose)
    monkeypatch.setitem(config.TUNING, "spin_limit", 1 << 16)
    check_against_reference(cell, 4, B, H, lengths, reverse, torch.bfloat16, bias=True, seed=B + H)
