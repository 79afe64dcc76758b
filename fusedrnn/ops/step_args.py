"""The argument check of a kernel backend's fused decode `step` (fusedrnn/ops/cell_step.py), shared
by the backends so that each gives the same errors with the same messages; neither backend imports
the other.

Dimensions: B batch, I input width, H hidden units, G gates.
"""
from __future__ import annotations

from ..cell_table import GATES


def check(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> tuple[int, int, int]:
    """B, I, H of a `step` call whose shapes, dtypes and devices agree, else the error
    `_error` names."""
    lstm = cell == "lstm"
    B, I = x.shape
    H = h0.shape[-1]
    GH = GATES[cell] * H
    dtype, device = x.dtype, x.device
    tensors = (h0, c0, w_ih, w_hh, b_ih, b_hh)
    ok = h0.shape == (B, H) and w_ih.shape == (GH, I) and w_hh.shape == (GH, H) and (c0 is not None) == lstm \
        and (not lstm or c0.shape == (B, H))
    for t in tensors:
        if not ok:
            break
        if t is not None:
            ok = t.dtype is dtype and t.device == device and (t.dim() != 1 or t.shape[0] == GH)
    if not ok:
        _error(cell, x, *tensors)
    return B, I, H


def _error(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """Raise the ValueError/TypeError/RuntimeError that names what `step`'s arguments got wrong."""
    B, I = x.shape
    H = h0.shape[-1]
    GH = GATES[cell] * H
    expected = {"h0": (B, H), "w_ih": (GH, I), "w_hh": (GH, H)}
    given = {"h0": h0, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    if cell == "lstm":
        expected["c0"], given["c0"] = (B, H), c0
    elif c0 is not None:
        raise ValueError(f"c0 must be None for cell {cell!r}")
    for name in ("b_ih", "b_hh"):
        if given[name] is not None:
            expected[name] = (GH,)
    for name, shape in expected.items():
        t = given[name]
        if t is None or tuple(t.shape) != shape:
            raise ValueError(f"step: {name} must have shape {shape}, got {None if t is None else tuple(t.shape)}")
        if t.dtype != x.dtype:
            raise TypeError(f"step: {name} has dtype {t.dtype} but x has {x.dtype}; all must match")
        if t.device != x.device:
            raise RuntimeError(f"step: {name} is on {t.device} but x is on {x.device}; all must be on one device")
    raise ValueError("step: inconsistent arguments")  # unreachable when the checks above are complete
