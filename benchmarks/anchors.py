"""PUBLISHED ANCHORS — the cuDNN numbers of the anchor shapes (docs/anchors.md), NOT
measurements of this run.

Source: docs/anchors.md (one NVIDIA H100 80GB HBM3; torch 2.11.0+cu130, cuDNN 9.19, Triton
3.6.0; torch.nn modules, input size = hidden size, batch_first=True, median of 20 runs
timed with CUDA events after 3 warm-ups; fw = forward under no_grad, fwbw = forward +
y.sum().backward()). Milliseconds. They feed only the "vs anchor" columns of the report
(anchor time / measured time), so a run on another card can be read against the
published card; they are never shown or stored as a measurement.
"""
from __future__ import annotations

from .shapes import Case

SOURCE = "docs/anchors.md: cuDNN via torch.nn on one NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, cuDNN 9.19"

_COLUMNS = (("fp32", "fw"), ("bf16", "fw"), ("fp16", "fw"), ("fp32", "fwbw"), ("bf16", "fwbw"), ("fp16", "fwbw"))

# cell, B, T, H: fp32 fw, bf16 fw, fp16 fw, fp32 fwbw, bf16 fwbw, fp16 fwbw
_LAYER = {
    ("lstm", 1, 1024, 256): (14.55, 18.28, 18.72, 32.22, 40.51, 33.57),
    ("lstm", 8, 512, 128): (1.17, 11.44, 1.09, 2.31, 21.15, 2.15),
    ("lstm", 16, 1024, 768): (19.37, 18.39, 2.31, 43.51, 44.62, 7.23),
    ("lstm", 64, 256, 1024): (5.09, 5.35, 2.20, 14.09, 13.50, 6.17),
    ("lstm", 256, 128, 512): (3.17, 3.04, 2.59, 7.97, 7.73, 6.48),
    ("gru", 1, 1024, 256): (15.40, 19.07, 17.86, 29.10, 40.46, 38.04),
    ("gru", 8, 512, 128): (0.52, 9.62, 1.00, 1.30, 21.58, 1.99),
    ("gru", 16, 1024, 768): (16.86, 13.83, 17.78, 45.16, 38.74, 38.50),
    ("gru", 64, 256, 1024): (5.77, 5.24, 4.96, 13.30, 13.05, 10.17),
    ("gru", 256, 128, 512): (2.21, 3.45, 2.56, 7.50, 7.07, 6.81),
    ("rnn_tanh", 1, 1024, 256): (1.95, 18.73, 2.07, 3.98, 39.03, 3.96),
    ("rnn_tanh", 8, 512, 128): (0.37, 9.54, 0.55, 1.44, 20.57, 1.07),
    ("rnn_tanh", 16, 1024, 768): (15.88, 19.54, 4.28, 41.48, 39.48, 9.87),
    ("rnn_tanh", 64, 256, 1024): (5.54, 6.12, 1.54, 11.05, 10.31, 3.20),
    ("rnn_tanh", 256, 128, 512): (3.07, 2.96, 2.69, 6.17, 7.22, 6.05),
}

# LSTM, 2 layers, bidirectional, B=32, T=512, I=256, H=512
_MODEL = {
    "encoder-padded": (44.19, 25.97, 25.24, 63.39, 58.04, 55.60),
    "encoder-packed": (40.85, 28.62, 26.54, 67.26, 69.63, 74.95),
}

# decoding, 2-layer nn.LSTM, one call per step, no_grad: ms per step. The table gives fp32
# only as single numbers (fp16 is quoted as a range 0.166-0.172 ms without saying which size).
_DECODE = {(1, 1024, "fp32"): 0.155, (8, 512, "fp32"): 0.159}


def _pick(values, dtype: str, mode: str):
    return dict(zip(_COLUMNS, values)).get((dtype, mode))


def anchor_ms(case: Case, dtype: str, mode: str) -> float | None:
    """The published cuDNN time (ms; per step for decoding) for this case, dtype and mode,
    or None where the published table has no number for it."""
    if case.decode:
        if case.layers == 2 and case.I == case.H and case.cell == "lstm" and not case.bidirectional and mode == "fw":
            return _DECODE.get((case.B, case.H, dtype))
        return None
    if case.section == "model":
        if (case.cell, case.B, case.T, case.I, case.H, case.layers, case.bidirectional) == ("lstm", 32, 512, 256, 512, 2, True):
            values = _MODEL.get(case.name)
            return _pick(values, dtype, mode) if values else None
        return None
    if case.layers != 1 or case.bidirectional or case.I != case.H or case.packed:
        return None
    values = _LAYER.get((case.cell, case.B, case.T, case.H))
    return _pick(values, dtype, mode) if values else None


def best_anchor_ms(case: Case, mode: str) -> float | None:
    """cuDNN's fastest published dtype for this case and mode (the goal: beat it)."""
    found = [t for d in ("fp32", "bf16", "fp16") if (t := anchor_ms(case, d, mode)) is not None]
    return min(found) if found else None
