"""The argument check of a kernel backend's fused decode `step` (fusedrnn/ops/cell_step.py), shared
by the backends so that each gives the same errors with the same messages; neither backend imports
the other.

Dimensions: B batch, I input width, H hidden units, G gates.
"""
from __future__ import annotations

from ..cell_table import GATES


def check(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> tuple[int, int, int]:
    """B, I, H of a `step` call whose shapes, dtypes and devices agree, else the error
    `_error` names. A decode step runs it per layer: each attribute is read once, unrolled."""
    B, I = x.shape
    H = h0.shape[-1]
    GH = GATES[cell] * H
    dtype, device = x.dtype, x.device
    ok = (h0.shape, w_ih.shape, w_hh.shape) == ((B, H), (GH, I), (GH, H)) \
        and h0.dtype is dtype and w_ih.dtype is dtype and w_hh.dtype is dtype \
        and h0.device == device and w_ih.device == device and w_hh.device == device
    if ok and (c0 is not None) != (cell == "lstm"):
        ok = False
    for t in (c0, b_ih, b_hh):
        if ok and t is not None:
            ok = t.dtype is dtype and t.device == device and t.shape == ((B, H) if t is c0 else (GH,))
    if not ok:
        _error(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
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
