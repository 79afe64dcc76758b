"""backend="cuda": launchers for the fusedrnn._C extension (csrc/).

Python validates and allocates (outputs and workspace, with torch, on the caller's
stream, so CUDA-graph capture sees no allocation inside the extension); the extension
gets data pointers, shapes, strides, dtype codes and torch's current stream as
integers, checks every value again and launches. No torch headers in the extension.

Dimensions: T steps, B batch, H hidden, G gates, S fp32 values saved per (t, b, unit)
for backward (LSTM 5: i,f,g,o,c_prev · GRU 5: r,z,n,W_hn h+b_hn,h_prev · RNN 1: h).

Environment: FUSEDRNN_CUDA_MODE = auto (default) | persistent | step forces the kernel
family (tests use it to cover both); FUSEDRNN_CUDA_POISON=1 NaN-fills every output before
the launch so an element the kernel forgot to write fails loudly.
"""
from __future__ import annotations

import os

import torch

from .common import GATES, INT32_MAX

try:
    from .. import _C
    _IMPORT_ERROR: ImportError | None = None
except ImportError as e:  # not built (no nvcc at install time) or not loadable
    _C = None
    _IMPORT_ERROR = e

#: fp32 values saved per (t, b, hidden unit) by the forward kernel for the backward one
SAVED_SLOTS = {"lstm": 5, "gru": 5, "rnn_tanh": 1, "rnn_relu": 1}
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.int32: 3}
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MODE_ENV, POISON_ENV = "FUSEDRNN_CUDA_MODE", "FUSEDRNN_CUDA_POISON"


def availability(device: torch.device) -> str | None:
    """None if the extension can run on `device`, else why not."""
    if _C is None:
        if isinstance(_IMPORT_ERROR, ModuleNotFoundError) and _IMPORT_ERROR.name == "fusedrnn._C":
            return ("the fusedrnn._C extension is not built (nvcc was not found at install time, "
                    "or FUSEDRNN_SKIP_CUDA_BUILD was set)")
        return f"the fusedrnn._C extension cannot be imported: {_IMPORT_ERROR}"
    device = torch.device(device)
    if device.type != "cuda":
        return f"no CUDA device: the input is on {device.type}"
    return None


def unsupported(cell: str, dtype, hidden_size: int, proj_size: int = 0) -> str | None:
    """None if the kernels handle this configuration, else why not."""
    if cell not in GATES:
        return f"unknown cell {cell!r}"
    if proj_size:
        return "the cuda backend does not implement proj_size (LSTM projections)"
    if dtype is not None and dtype not in KERNEL_DTYPES:
        return f"the cuda backend runs float32, float16 and bfloat16, not {dtype}"
    if hidden_size is not None and GATES[cell] * hidden_size * hidden_size > INT32_MAX:
        return f"hidden_size={hidden_size} makes W_hh exceed the kernels' int32 indexing"
    return None


def _arg(t: torch.Tensor | None):
    """A tensor as the extension takes it: (data_ptr, dtype_code, shape, strides) or None."""
    if t is None:
        return None
    if t.dtype not in DTYPE_CODES:
        raise TypeError(f"the cuda backend cannot pass a {t.dtype} tensor to its kernels")
    return (t.data_ptr(), DTYPE_CODES[t.dtype], tuple(t.shape), tuple(t.stride()))


def _mode() -> str:
    mode = os.environ.get(MODE_ENV, "auto")
    if mode not in ("auto", "persistent", "step"):
        raise ValueError(f"{MODE_ENV}={mode!r}; expected auto, persistent or step")
    return mode


def _empty(shape, dtype, device) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtype, device=device)
    if os.environ.get(POISON_ENV) == "1":
        t.fill_(float("nan"))
    return t


def _launch_context(t: torch.Tensor):
    why = availability(t.device)
    if why is not None:
        raise RuntimeError(f"fusedrnn cuda backend: {why}")
    index = t.device.index if t.device.index is not None else torch.cuda.current_device()
    return torch.cuda.current_stream(t.device).cuda_stream, index


def forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
    """Forward recurrence; see fusedrnn/ops/fused.py for the contract.

    gx (T,B,G*H) · h0 (B,H) · c0 (B,H) LSTM only · w_hh (G*H,H) · b_hh (G*H,) or None ·
    lengths (B,) int32 on gx's device or None. Returns y (T,B,H), hT (B,H), cT (B,H) or
    None, and saved = (activations (T,B,S,H) fp32,) when need_grad, else ().
    """
    stream, index = _launch_context(gx)
    T, B, GH = gx.shape
    H = GH // GATES[cell]
    dt, dev = gx.dtype, gx.device
    y = _empty((T, B, H), dt, dev)
    hT = _empty((B, H), dt, dev)
    cT = _empty((B, H), dt, dev) if cell == "lstm" else None
    saved = _empty((T, B, SAVED_SLOTS[cell], H), torch.float32, dev) if need_grad else None
    hbuf = torch.empty((2, B, H), dtype=dt, device=dev)           # h exchanged between blocks
    state = torch.empty((2, B, H), dtype=torch.float32, device=dev)  # fp32 h and c
    _C.forward(cell, bool(reverse), _arg(gx), _arg(h0), _arg(c0), _arg(w_hh), _arg(b_hh), _arg(lengths),
               _arg(y), _arg(hT), _arg(cT), _arg(saved), _arg(hbuf), _arg(state), stream, index, _mode())
    return y, hT, cT, ((saved,) if saved is not None else ())


def backward(cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y, saved):
    """Backward recurrence: d_gx (T,B,G*H) in gx's dtype, d_gh (the same tensor except
    for GRU, whose n gate differs: d_gh_n = r * d_gx_n), dh0 (B,H), dc0 (B,H) or None."""
    stream, index = _launch_context(dy)
    if len(saved) != 1:
        raise RuntimeError("cuda backward needs the activations saved by forward(need_grad=True)")
    (acts,) = saved
    T, B, H = dy.shape
    GH = GATES[cell] * H
    dt, dev = gx.dtype, gx.device
    w_t = w_hh.t().contiguous()  # (H, G*H): each block's slice is rows of W_hhᵀ
    d_gx = _empty((T, B, GH), dt, dev)
    d_gh = _empty((T, B, GH), dt, dev) if cell == "gru" else None
    dh0 = _empty((B, H), dt, dev)
    dc0 = _empty((B, H), dt, dev) if cell == "lstm" else None
    state = torch.empty((2, B, H), dtype=torch.float32, device=dev)  # fp32 dh and dc carried
    _C.backward(cell, bool(reverse), _arg(dy.to(dt)), _arg(dhT.to(dt)), _arg(dcT.to(dt) if dcT is not None else None),
                _arg(w_t), _arg(lengths), _arg(acts), _arg(d_gx), _arg(d_gh), _arg(dh0), _arg(dc0), _arg(state),
                stream, index, _mode())
    return d_gx, (d_gh if d_gh is not None else d_gx), dh0, dc0


def plan(cell: str, dtype: torch.dtype, batch: int, hidden_size: int, backward: bool = False,
         device: torch.device | int | None = None, mode: str | None = None) -> dict:
    """How a call of this size runs on a device: persistent or per-step, units per block,
    blocks, batch chunk, shared memory bytes, split-K and, for the fallback, the reason."""
    if _C is None:
        raise RuntimeError(availability(torch.device("cuda")))
    index = torch.device(device).index if isinstance(device, torch.device) else device
    if index is None:
        index = torch.cuda.current_device()
    return _C.plan(backward, cell, DTYPE_CODES[dtype], batch, hidden_size, index, mode or _mode())
