"""backend="triton": the recurrence contract of DESIGN.md as fused Triton kernels.

One file per cell (lstm.py, gru.py, rnn.py) holds its forward and backward kernels and
launchers; shared.py the pieces the kernels share; config.py the tuning table and the
grid choice. The functions below are the kernel-backend interface of fusedrnn/ops/fused.py.
"""
from __future__ import annotations

import torch

try:
    import triton  # noqa: F401
    _IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover - triton is a dependency of this package
    _IMPORT_ERROR = e

if _IMPORT_ERROR is None:
    from . import config, gru, lstm, rnn

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def availability(device: torch.device) -> str | None:
    """None if the Triton kernels can run on `device`, else why not."""
    if _IMPORT_ERROR is not None:
        return f"triton cannot be imported ({_IMPORT_ERROR})"
    device = torch.device(device)
    if device.type == "cuda":
        if config.INTERPRET:
            return None  # the interpreter copies CUDA tensors to the host and back
        return None if torch.cuda.is_available() else "CUDA is not available"
    if device.type == "cpu":
        if config.INTERPRET:
            return None
        return "Triton kernels run on CUDA devices (or on the CPU only with TRITON_INTERPRET=1 set before import)"
    return f"Triton kernels do not run on {device.type} devices"


def unsupported(cell: str, dtype, hidden_size: int, proj_size: int) -> str | None:
    """None if the kernels support this call, else a readable reason."""
    if proj_size:
        return "the Triton kernels have no LSTM projection (proj_size > 0)"
    if dtype is not None and dtype not in _DTYPES:
        return f"the Triton kernels support float32, bfloat16 and float16, not {dtype}"
    return None


def _cell_module(cell):
    return lstm if cell == "lstm" else gru if cell == "gru" else rnn


def saved_shapes(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
    if not need_grad:
        return []
    T, B, GH = gx.shape
    mod = _cell_module(cell)
    return mod.saved_shapes(T, B, GH // mod.G)


def forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
    if cell == "lstm":
        return lstm.lstm_fwd(gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad)
    if cell == "gru":
        y, hT, saved = gru.gru_fwd(gx, h0, w_hh, b_hh, lengths, reverse, need_grad)
    else:
        y, hT, saved = rnn.rnn_fwd(gx, h0, w_hh, b_hh, lengths, reverse, need_grad, relu=cell == "rnn_relu")
    return y, hT, None, saved


def backward(cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y, saved):
    if cell == "lstm":
        return lstm.lstm_bwd(dy, dhT, dcT, gx, w_hh, lengths, reverse, saved)
    if cell == "gru":
        d_gx, d_gh, dh0 = gru.gru_bwd(dy, dhT, gx, w_hh, lengths, reverse, saved)
    else:
        d_gx, d_gh, dh0 = rnn.rnn_bwd(dy, dhT, gx, w_hh, lengths, reverse, saved, relu=cell == "rnn_relu")
    return d_gx, d_gh, dh0, None
