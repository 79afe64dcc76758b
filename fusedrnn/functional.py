"""Multi-layer, bidirectional RNNs built from the per-layer recurrence.

Everything a torch.nn RNN offers beyond one layer-direction lives here once, so
every backend gets it: stacking layers, both directions, inter-layer dropout,
LSTM projections and variable lengths. Inputs are time-major and padded; a
PackedSequence arrives here already unpacked (see fusedrnn.packing).

Dimensions: T time steps, B batch, I input features, H hidden units,
P = proj_size or H, L layers, D directions, G gates.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import ops


class LayerWeights(NamedTuple):
    w_ih: torch.Tensor            # (G*H, I or D*P)
    w_hh: torch.Tensor            # (G*H, P)
    b_ih: torch.Tensor | None     # (G*H,)
    b_hh: torch.Tensor | None     # (G*H,)
    w_hr: torch.Tensor | None     # (P, H) LSTM projection


def rnn(cell: str, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
        weights: list[LayerWeights], *, num_layers: int, bidirectional: bool,
        dropout: float = 0.0, training: bool = False, lengths: torch.Tensor | None = None,
        dropout_mask: torch.Tensor | None = None, backend: str = "reference", checked: bool = False):
    """Run a stacked RNN.

    x (T,B,I) time-major, zero past each sequence's end · h0 (L*D,B,P) · c0 (L*D,B,H)
    for "lstm" else None · weights[l*D + d] for layer l, direction d · lengths (B,) or
    None · dropout_mask (T,B) bool: when given, inter-layer dropout draws its noise
    only for these positions, in (t, b) order, which is how torch.nn drops a packed
    sequence. checked=True: the caller (fusedrnn's modules) has applied torch.nn's checks to
    every argument and resolved `backend` to "reference", "triton" or "cuda", so each layer
    skips the contract's checks and backend choice (fusedrnn.ops.run).
    Returns (y (T,B,D*P), h_n (L*D,B,P), c_n (L*D,B,H) or None).
    """
    D = 2 if bidirectional else 1
    h_n, c_n = [], []
    layer_in = x
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            w = weights[k]
            gx = F.linear(layer_in, w.w_ih, w.b_ih)
            args = (cell, gx, h0[k], c0[k] if c0 is not None else None, w.w_hh, w.b_hh)
            if checked:
                res = ops.run(backend, *args, lengths=lengths, reverse=(d == 1), w_hr=w.w_hr)
            else:
                res = ops.recurrence(*args, lengths=lengths, reverse=(d == 1), backend=backend, w_hr=w.w_hr)
            outs.append(res[0])
            h_n.append(res[1])
            if cell == "lstm":
                c_n.append(res[2])
        layer_in = outs[0] if D == 1 else torch.cat(outs, dim=2)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_in = _dropout(layer_in, dropout, dropout_mask)
    return layer_in, torch.stack(h_n), (torch.stack(c_n) if cell == "lstm" else None)


def _dropout(y: torch.Tensor, p: float, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return F.dropout(y, p, training=True)
    dropped = F.dropout(y[mask], p, training=True)
    return torch.zeros_like(y).masked_scatter(mask.unsqueeze(2), dropped)
