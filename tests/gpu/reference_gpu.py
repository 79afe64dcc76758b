"""The float64 reference of the recurrence contract in ONE call of torch's own RNN (cuDNN
on a GPU, ATen's C++ loop on the CPU) instead of a Python loop over T: at the anchor
shapes (T up to 1024) the Python-loop oracle costs seconds per test, this costs
milliseconds. Same arguments and results as
`fusedrnn.ops.recurrence(..., backend="reference")` on float64 inputs, differentiable
with respect to gx, h0, c0, w_hh and b_hh:

    from reference_gpu import recurrence64      # tests/gpu is on sys.path for its tests
    y, hT, cT = recurrence64("lstm", gx, h0, c0, w_hh, b_hh, lengths, reverse)

How: gx (T, B, G*H) already holds x W_ihᵀ + b_ih, so it is fed to torch's RNN as its
input with W_ih = identity (not trained) and b_ih = 0. Lengths become a PackedSequence;
`reverse` runs each sequence backwards within its own length (indices t -> L_b - 1 - t),
which is how the contract's reverse direction reads its steps.

Dimensions: T steps, B batch, H hidden units, G gates (LSTM 4, GRU 3, RNN 1).
"""
from __future__ import annotations

import warnings

import torch
from torch import _VF
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
_FN = {"lstm": _VF.lstm, "gru": _VF.gru, "rnn_tanh": _VF.rnn_tanh, "rnn_relu": _VF.rnn_relu}


def _reversal_index(T: int, lengths: torch.Tensor | None, B: int, device) -> torch.Tensor:
    """(T, B) step index: t -> L_b - 1 - t inside each sequence, t itself past its end."""
    t = torch.arange(T, device=device).unsqueeze(1).expand(T, B)
    if lengths is None:
        return T - 1 - t
    L = lengths.to(device=device, dtype=torch.long).unsqueeze(0)
    return torch.where(t < L, L - 1 - t, t)


def recurrence64(cell: str, gx, h0, c0, w_hh, b_hh, lengths=None, reverse: bool = False):
    """gx (T,B,G*H) · h0 (B,H) · c0 (B,H) LSTM only · w_hh (G*H,H) · b_hh (G*H,) or None ·
    lengths (B,) in [1, T] or None. Returns (y, hT, cT) for "lstm", (y, hT) otherwise,
    all float64; y is zero past each sequence's length."""
    f64 = torch.float64
    T, B, GH = gx.shape
    H = GH // GATES[cell]
    dev = gx.device
    x = gx.to(f64)
    weights = [torch.eye(GH, dtype=f64, device=dev), w_hh.to(f64)]
    if b_hh is not None:
        weights += [torch.zeros(GH, dtype=f64, device=dev), b_hh.to(f64)]
    hx = h0.to(f64).unsqueeze(0)
    if cell == "lstm":
        hx = (hx, c0.to(f64).unsqueeze(0))
    idx = _reversal_index(T, lengths, B, dev) if reverse else None
    if idx is not None:
        x = x.gather(0, idx.unsqueeze(2).expand(T, B, GH))
    args = (weights, b_hh is not None, 1, 0.0, True, False)   # layers, dropout, train (cuDNN's backward needs it), bidir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "weights are not part of single contiguous chunk": expected here
        if lengths is None:
            out = _FN[cell](x, hx, *args, False)
            y, states = out[0], out[1:]
        else:
            packed = pack_padded_sequence(x, lengths.to("cpu", torch.long), enforce_sorted=False)
            order = packed.sorted_indices
            hx_sorted = tuple(h.index_select(1, order) for h in hx) if cell == "lstm" else hx.index_select(1, order)
            out = _FN[cell](packed.data, packed.batch_sizes, hx_sorted, *args)
            y, _ = pad_packed_sequence(PackedSequence(out[0], packed.batch_sizes, order, packed.unsorted_indices),
                                       total_length=T)
            states = tuple(s.index_select(1, packed.unsorted_indices) for s in out[1:])
    if idx is not None:
        y = y.gather(0, idx.unsqueeze(2).expand(T, B, H))
    return (y, *(s.squeeze(0) for s in states))
