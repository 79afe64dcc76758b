"""backend="cuda": launchers for the fusedrnn._C extension (csrc/).

Python validates and allocates (outputs and one workspace, with torch, on the caller's
stream, so CUDA-graph capture sees no allocation inside the extension); the extension
gets data pointers, shapes, strides, dtype codes and torch's current stream as
integers, checks every value again, plans and launches.

Dimensions: T steps, B batch, H hidden, G gates, S fp32 values saved per (t, b, unit)
for backward (LSTM 5: i,f,g,o,c_prev · GRU 5: r,z,n,W_hn h+b_hn,h_prev · RNN 1: h).

How a call runs is decided by a host-side plan (`plan`, or `plan_for` with a device's
limits and no GPU): tier "cta" (one CTA per batch group holds W_hh), "cluster" (a
thread-block cluster shares it through distributed shared memory), "grid" (the whole
grid, exchanging h through L2 with per-CTA flags) or "step" (one launch per step).

Environment (tests and diagnosis):
    FUSEDRNN_CUDA_MODE = auto | persistent | cta | cluster | grid | step   force a tier
    FUSEDRNN_CUDA_UNITS, FUSEDRNN_CUDA_BATCH_ROWS = N   force units per CTA / rows per group
    FUSEDRNN_CUDA_PASSES = N    grid tier: force N passes over K per step (streams h through smem)
    FUSEDRNN_CUDA_POISON=1      NaN-fill every output first, so an unwritten element fails loudly
    FUSEDRNN_CUDA_CHECK=1       synchronise after each launch and raise on a kernel's error report
                                (a grid-tier flag wait that timed out names its step and CTAs;
                                unchecked, such a kernel's results are NaN from that step on)
    FUSEDRNN_CUDA_SPIN_LIMIT=N  clock cycles such a wait spins before it reports (default ~2^32)
    FUSEDRNN_CUDA_FAKE_LAUNCH_FAILURE=1   report the persistent launch as refused (tests the fallback)
"""
from __future__ import annotations

import os
import warnings

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
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.int32: 3, torch.uint8: 4}
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MODES = ("auto", "persistent", "cta", "cluster", "grid", "step")
MODE_ENV, POISON_ENV, CHECK_ENV = "FUSEDRNN_CUDA_MODE", "FUSEDRNN_CUDA_POISON", "FUSEDRNN_CUDA_CHECK"
UNITS_ENV, ROWS_ENV, SPIN_ENV = "FUSEDRNN_CUDA_UNITS", "FUSEDRNN_CUDA_BATCH_ROWS", "FUSEDRNN_CUDA_SPIN_LIMIT"
PASSES_ENV = "FUSEDRNN_CUDA_PASSES"
FAKE_FAILURE_ENV = "FUSEDRNN_CUDA_FAKE_LAUNCH_FAILURE"
STATUS_WORDS = 16  # the kernels' error report at the start of the workspace (csrc/layout.h)
#: the limits of an H100 SXM (sm_90) as plan_for takes them
H100_LIMITS = dict(sms=132, smem_optin=227 * 1024, smem_per_sm=228 * 1024, regs_per_sm=65536, cc_major=9,
                   cc_minor=0, max_cluster=16, cooperative=1)
_warned: set[str] = set()


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


def saved_shapes(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
    """(shape, dtype) of each tensor `forward` saves: the activations (T, B, S, H) fp32."""
    if not need_grad:
        return []
    T, B, GH = gx.shape
    return [((T, B, SAVED_SLOTS[cell], GH // GATES[cell]), torch.float32)]


def _arg(t: torch.Tensor | None):
    """A tensor as the extension takes it: (data_ptr, dtype_code, shape, strides) or None."""
    if t is None:
        return None
    if t.dtype not in DTYPE_CODES:
        raise TypeError(f"the cuda backend cannot pass a {t.dtype} tensor to its kernels")
    return (t.data_ptr(), DTYPE_CODES[t.dtype], tuple(t.shape), tuple(t.stride()))


def _int_env(name: str) -> int:
    text = os.environ.get(name, "0") or "0"
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"{name}={text!r} must be >= 0")
    return value


def _mode() -> str:
    mode = os.environ.get(MODE_ENV, "auto")
    if mode not in MODES:
        raise ValueError(f"{MODE_ENV}={mode!r}; expected one of {', '.join(MODES)}")
    return mode


def _knobs() -> dict:
    """The launch knobs from the environment, as the extension's keyword arguments."""
    return dict(mode=_mode(), units=_int_env(UNITS_ENV), batch_rows=_int_env(ROWS_ENV), passes=_int_env(PASSES_ENV),
                spin_limit=_int_env(SPIN_ENV), fake_launch_failure=os.environ.get(FAKE_FAILURE_ENV) == "1")


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


def _workspace(backward: bool, cell: str, dtype, B: int, H: int, index: int, knobs: dict, device) -> torch.Tensor:
    p = _C.plan(backward, cell, DTYPE_CODES[dtype], B, H, index, knobs["mode"], knobs["units"], knobs["batch_rows"],
                knobs["passes"])
    return torch.empty(p["workspace_bytes"], dtype=torch.uint8, device=device)


def describe_status(status, what: str) -> str | None:
    """The kernels' error report (the workspace's first STATUS_WORDS int32) as a sentence, or None."""
    if not status[0]:
        return None
    if status[0] == 1:
        direction = "backward" if status[1] else "forward"
        return (f"fusedrnn cuda {what}: the {direction} persistent kernel (grid tier) timed out: CTA {status[3]} "
                f"waited at step {status[2]} for the h chunk of CTA {status[4]} (its flag read {status[5]}, "
                f"wanted {status[6]}); raise {SPIN_ENV} if the GPU is merely shared and slow")
    return f"fusedrnn cuda {what}: the kernel reported error {status[0]} (status {list(status)})"


def _after_launch(note: str, ws: torch.Tensor, what: str) -> None:
    if note and note not in _warned:
        _warned.add(note)
        warnings.warn(f"fusedrnn cuda backend: {note}", RuntimeWarning, stacklevel=3)
    if os.environ.get(CHECK_ENV) == "1":
        torch.cuda.synchronize(ws.device)  # an asynchronous kernel fault surfaces here, at this launch
        message = describe_status(ws[:4 * STATUS_WORDS].view(torch.int32).tolist(), what)
        if message:
            raise RuntimeError(message)


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
    knobs = _knobs()
    y = _empty((T, B, H), dt, dev)
    hT = _empty((B, H), dt, dev)
    cT = _empty((B, H), dt, dev) if cell == "lstm" else None
    saved = [_empty(shape, sdt, dev) for shape, sdt in saved_shapes(cell, gx, h0, c0, w_hh, b_hh, lengths,
                                                                      reverse, need_grad)]
    ws = _workspace(False, cell, dt, B, H, index, knobs, dev)
    note = _C.forward(cell, bool(reverse), _arg(gx), _arg(h0), _arg(c0), _arg(w_hh), _arg(b_hh), _arg(lengths),
                      _arg(y), _arg(hT), _arg(cT), _arg(saved[0] if saved else None), _arg(ws), stream, index,
                      **knobs)
    _after_launch(note, ws, f"{cell} forward")
    return y, hT, cT, tuple(saved)


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
    knobs = _knobs()
    w_t = w_hh.t().contiguous()  # (H, G*H): each CTA's slice is rows of W_hhᵀ
    d_gx = _empty((T, B, GH), dt, dev)
    d_gh = _empty((T, B, GH), dt, dev) if cell == "gru" else None
    dh0 = _empty((B, H), dt, dev)
    dc0 = _empty((B, H), dt, dev) if cell == "lstm" else None
    ws = _workspace(True, cell, dt, B, H, index, knobs, dev)
    note = _C.backward(cell, bool(reverse), _arg(dy.to(dt)), _arg(dhT.to(dt)),
                       _arg(dcT.to(dt) if dcT is not None else None), _arg(w_t), _arg(lengths), _arg(acts),
                       _arg(d_gx), _arg(d_gh), _arg(dh0), _arg(dc0), _arg(ws), stream, index, **knobs)
    _after_launch(note, ws, f"{cell} backward")
    return d_gx, (d_gh if d_gh is not None else d_gx), dh0, dc0


def _require_extension():
    if _C is None:
        raise RuntimeError(availability(torch.device("cuda")))


def plan(cell: str, dtype: torch.dtype, batch: int, hidden_size: int, backward: bool = False,
         device: torch.device | int | None = None, mode: str | None = None, units: int | None = None,
         batch_rows: int | None = None, passes: int | None = None) -> dict:
    """How a call of this size runs on a CUDA device: tier, grid, cluster, units per CTA,
    batch groups, shared memory, workspace, the cost model's estimate and the reason."""
    _require_extension()
    index = torch.device(device).index if isinstance(device, (torch.device, str)) else device
    if index is None:
        index = torch.cuda.current_device()
    knobs = _knobs()
    pick = lambda name, value: knobs[name] if value is None else value  # noqa: E731
    return _C.plan(backward, cell, DTYPE_CODES[dtype], batch, hidden_size, index, mode or knobs["mode"],
                   pick("units", units), pick("batch_rows", batch_rows), pick("passes", passes))


def plan_for(cell: str, dtype: torch.dtype, batch: int, hidden_size: int, limits: dict | None = None,
             backward: bool = False, mode: str = "auto", units: int = 0, batch_rows: int = 0, passes: int = 0) -> dict:
    """The plan for a device described by `limits` (default: an H100, H100_LIMITS), without a GPU."""
    _require_extension()
    return _C.plan_for(backward, cell, DTYPE_CODES[dtype], batch, hidden_size, dict(limits or H100_LIMITS), mode,
                       units, batch_rows, passes)


def describe(cell: str, dtype, batch: int, hidden_size: int, device=None) -> str:
    """One clause for fusedrnn.explain: the tier each direction would run, and why."""
    try:
        parts = []
        for bwd in (False, True):
            p = plan(cell, dtype, batch, hidden_size, backward=bwd, device=device)
            name = "backward" if bwd else "forward"
            parts.append(f"{name} on the {p['tier']} tier ({p['reason']})")
        return "; ".join(parts)
    except (RuntimeError, ValueError) as e:
        return f"no plan: {e}"
