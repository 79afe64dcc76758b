"""backend="cuda": launchers for the fusedrnn._C extension (csrc/).

Python validates and allocates (outputs and one workspace, with torch, on the caller's
stream, so CUDA-graph capture sees no allocation inside the extension); the extension
gets data pointers, shapes, strides, dtype codes and torch's current stream as
integers, checks every value again, plans and launches.

Dimensions: T steps, B batch, H hidden, P the state fed back (proj_size of an LSTM with a
projection, else H), G gates, D directions run by one launch (1 or 2), S fp32 values saved
per (t, b, unit) for backward (LSTM 5: i,f,g,o,c_prev · GRU 5: r,z,n,W_hn h+b_hn,h_prev ·
GRU with reset_after=False 4: r,z,n,h_prev · RNN 1: h). The kernel contract v2 (docs/design.md): h0 (D, B, P) runs both
directions in one launch (direction 1 backwards from lengths[b]-1), w_hr (D?, P, H) an LSTM
projection; `step` is the fused decode step of a cell (fusedrnn/ops/cell_step.py).

How a call runs is decided by a host-side plan (`plan`, or `plan_for` with a device's
limits and no GPU): tier "cta" (one CTA per batch group holds W_hh), "cluster" (a
thread-block cluster shares it through distributed shared memory), "grid" (the whole
grid, exchanging h through L2 with per-CTA flags) or "step" (one launch per step). With
two directions the plan's CTA groups double (one more independent group per direction);
with a projection each step has two stages (W_hh h -> c, m; then h = W_hr m), each CTA
keeping its slices of W_hh and W_hr in shared memory. The GRU with its reset gate before the
product (reset_after=False) has two stages too (W_hr,z h -> r, z; then n from W_hn (r ⊙ h)).

Environment (tests and diagnosis; read once, fusedrnn/settings.py):
    FUSEDRNN_CUDA_MODE = auto | persistent | cta | cluster | grid | step   force a tier
    FUSEDRNN_CUDA_UNITS, FUSEDRNN_CUDA_BATCH_ROWS = N   force units per CTA / rows per group
    FUSEDRNN_CUDA_PASSES = N    grid tier: force N passes over K per step (streams h through smem)
    FUSEDRNN_CUDA_POISON=1      NaN-fill every output first (an older name: FUSEDRNN_CHECK=1 fills them too)
    FUSEDRNN_CUDA_CHECK=1       an alias of FUSEDRNN_CHECK=1 (fusedrnn/ops/timeouts.py): synchronise
                                after each launch and raise on a kernel's error report (a grid-tier
                                flag wait that timed out names its step and CTAs). Unchecked, such a
                                kernel's results are NaN from that step on and its report raises at
                                the next launch or fusedrnn.check_timeouts()
    FUSEDRNN_CUDA_SPIN_LIMIT=N  clock cycles such a wait spins before it reports (default
                                DEFAULT_SPIN_CYCLES ~2^32, times FUSEDRNN_TIMEOUT_SCALE)
"""
from __future__ import annotations

import warnings

import torch

from .. import machine, settings
from ..cell_table import CELLS as CELL_TABLE
from . import step_args, timeouts
from .common import GATES, GRU_RESET_BEFORE, INT32_MAX

try:
    from .. import _C
    _IMPORT_ERROR: ImportError | None = None
except ImportError as e:  # not built (no nvcc at install time) or not loadable
    _C = None
    _IMPORT_ERROR = e

#: fp32 values saved per (t, b, hidden unit) by the forward kernel for the backward one
SAVED_SLOTS = {name: c.cuda_saved_slots for name, c in CELL_TABLE.items() if c.cuda_saved_slots is not None}
#: G per cell the CUDA kernels implement
CUDA_GATES = {name: GATES[name] for name in SAVED_SLOTS}
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.int32: 3, torch.uint8: 4}
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MODES = ("auto", "persistent", "cta", "cluster", "grid", "step")
MODE_ENV, POISON_ENV, CHECK_ENV = "FUSEDRNN_CUDA_MODE", "FUSEDRNN_CUDA_POISON", "FUSEDRNN_CUDA_CHECK"
UNITS_ENV, ROWS_ENV, SPIN_ENV = "FUSEDRNN_CUDA_UNITS", "FUSEDRNN_CUDA_BATCH_ROWS", "FUSEDRNN_CUDA_SPIN_LIMIT"
PASSES_ENV = "FUSEDRNN_CUDA_PASSES"
STATUS_WORDS = 16  # the kernels' error report at the start of the workspace (csrc/layout.h)
#: clock cycles a grid-tier flag wait spins by default (csrc/recurrence.cuh kDefaultSpinLimit)
DEFAULT_SPIN_CYCLES = 1 << 32
#: the limits of an H100 SXM (sm_90) as plan_for takes them (fusedrnn/machine.py)
H100_LIMITS = machine.H100_LIMITS
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


def unsupported(cell: str, dtype, hidden_size: int, proj_size: int = 0, directions: int = 1,
                regularised: bool = False) -> str | None:
    """None if the kernels handle this configuration, else why not."""
    if cell not in GATES:
        return f"unknown cell {cell!r}"
    if regularised and proj_size:
        return ("the CUDA kernels do not implement zoneout or recurrent dropout (zoneout=, zoneout_cell=, "
                "recurrent_dropout=) with proj_size; the 'triton' and 'reference' backends run them")
    if regularised and cell == GRU_RESET_BEFORE:
        return ("the CUDA kernels do not implement zoneout or recurrent dropout (zoneout=, zoneout_cell=, "
                "recurrent_dropout=) for GRU with reset_after=False; the 'triton' and 'reference' backends run them")
    if proj_size and cell != "lstm":
        return f"proj_size exists only for lstm, not {cell}"
    if proj_size and hidden_size is not None and not 0 < proj_size < hidden_size:
        return f"proj_size={proj_size} must lie in [1, hidden_size={hidden_size})"
    if directions not in (1, 2):
        return f"the cuda backend runs 1 or 2 directions per launch, not {directions}"
    if dtype is not None and dtype not in KERNEL_DTYPES:
        return f"the cuda backend runs float32, float16 and bfloat16, not {dtype}"
    if hidden_size is not None and GATES[cell] * hidden_size * hidden_size > INT32_MAX:
        return f"hidden_size={hidden_size} makes W_hh exceed the kernels' int32 indexing"
    return None


def _dims(cell, gx, h0):
    """(D, lead, T, B, H, P): directions, the leading (D,) of per-direction shapes (or ()), sizes."""
    D = 1 if h0.dim() == 2 else h0.shape[0]
    lead = (D,) if h0.dim() == 3 else ()
    T, B, DGH = gx.shape
    return D, lead, T, B, DGH // (D * GATES[cell]), h0.shape[-1]


def saved_shapes(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr=None, **masks):
    """(shape, dtype) of each tensor `forward` saves: the activations (D?, T, B, S, H) fp32 and,
    with a projection, m = o * tanh(c) (D?, T, B, H) fp32 for dW_hr. The masks change nothing."""
    if not need_grad:
        return []
    _, lead, T, B, H, _ = _dims(cell, gx, h0)
    shapes = [(lead + (T, B, SAVED_SLOTS[cell], H), torch.float32)]
    if w_hr is not None:
        shapes.append((lead + (T, B, H), torch.float32))
    return shapes


def _arg(t: torch.Tensor | None):
    """A tensor as the extension takes it: (data_ptr, dtype_code, shape, strides) or None."""
    if t is None:
        return None
    if t.dtype not in DTYPE_CODES:
        raise TypeError(f"the cuda backend cannot pass a {t.dtype} tensor to its kernels")
    return (t.data_ptr(), DTYPE_CODES[t.dtype], tuple(t.shape), tuple(t.stride()))


def _int_env(name: str) -> int:
    text = settings.get(name, "0") or "0"
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"{name}={text!r} must be >= 0")
    return value


def _mode() -> str:
    mode = settings.get(MODE_ENV, "auto")
    if mode not in MODES:
        raise ValueError(f"{MODE_ENV}={mode!r}; expected one of {', '.join(MODES)}")
    return mode


def _spin_limit() -> int:
    """FUSEDRNN_CUDA_SPIN_LIMIT as given, else the default scaled for the tool running (0: the
    extension's own default, which equals DEFAULT_SPIN_CYCLES)."""
    given = _int_env(SPIN_ENV)
    if given or timeouts.spin_scale() == 1.0:
        return given
    return timeouts.scaled(DEFAULT_SPIN_CYCLES, 1 << 62)


_parsed: tuple = (-1, {})  # (settings.generation, the knobs parsed from that snapshot)


def _knobs() -> dict:
    """The launch knobs from the environment (fusedrnn.settings' snapshot, parsed once per
    snapshot), as the extension's keyword arguments. The caller must not change the dict."""
    global _parsed
    if _parsed[0] != settings.generation:
        knobs = dict(mode=_mode(), units=_int_env(UNITS_ENV), batch_rows=_int_env(ROWS_ENV),
                     passes=_int_env(PASSES_ENV), spin_limit=_spin_limit(),
                     machine=machine.cxx_constants())  # the plan's cost model: $FUSEDRNN_CALIBRATION's, else defaults
        _parsed = (settings.generation, knobs)
    return _parsed[1]


def _empty(shape, dtype, device) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtype, device=device)
    if timeouts.poisoning():
        t.fill_(float("nan"))
    return t


def _masks(zoneout_h, zoneout_c, drop_h) -> dict:
    """The regularisers' masks (fusedrnn/regularisers.py) as the kernels read them: fp32,
    contiguous (drop_h shaped like h0), only those given. The caller keeps the dict (the tensors)
    alive across the launch and passes {name: _arg(mask)}."""
    given = (("zoneout_h", zoneout_h), ("zoneout_c", zoneout_c), ("drop_h", drop_h))
    return {k: m.to(torch.float32).contiguous() for k, m in given if m is not None}


def _launch_context(t: torch.Tensor):
    why = availability(t.device)
    if why is not None:
        raise RuntimeError(f"fusedrnn cuda backend: {why}")
    index = t.device.index if t.device.index is not None else torch.cuda.current_device()
    return torch.cuda.current_stream(t.device).cuda_stream, index


#: (workspace bytes, tier) of each launch shape seen: _C.plan's two answers a launch needs
_plans: dict = {}


def launch_plan(backward: bool, cell: str, dtype, B: int, H: int, index: int, knobs: dict, proj: int,
                directions: int) -> tuple[int, str]:
    """(workspace bytes, tier) of a launch, from the extension's plan, asked once per key: the
    plan is a pure function of the sizes, the dtype, the device (its index in this process), the
    tier knobs and the machine model's constants, and the key holds each of them."""
    key = (backward, cell, dtype, B, H, index, knobs["mode"], knobs["units"], knobs["batch_rows"], knobs["passes"],
           proj, directions, *knobs["machine"].values())  # machine: the calibrated cost model (CXX_NAMES order)
    got = _plans.get(key)
    if got is None:
        p = _C.plan(backward, cell, DTYPE_CODES[dtype], B, H, index, knobs["mode"], knobs["units"],
                    knobs["batch_rows"], knobs["passes"], proj, directions, machine=knobs["machine"])
        got = _plans[key] = (p["workspace_bytes"], p["tier"])
    return got


def _workspace(backward: bool, cell: str, dtype, B: int, H: int, index: int, knobs: dict, device, proj: int,
               directions: int) -> tuple[torch.Tensor, str]:
    """The launch's workspace (its first STATUS_WORDS int32 are the kernels' error report) and its tier."""
    nbytes, tier = launch_plan(backward, cell, dtype, B, H, index, knobs, proj, directions)
    return torch.empty(nbytes, dtype=torch.uint8, device=device), tier


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


def _after_launch(note: str, ws: torch.Tensor, what: str, tier: str) -> None:
    """Warn once about `note`; hand the kernels' error report to the shared timeout policy
    (fusedrnn/ops/timeouts.py). Only the grid tier's flag waits can time out."""
    if note and note not in _warned:
        _warned.add(note)
        warnings.warn(f"fusedrnn cuda backend: {note}", RuntimeWarning, stacklevel=3)
    timeouts.after_launch(ws[:4 * STATUS_WORDS].view(torch.int32), what, lambda words: describe_status(words, what),
                          waits=tier == "grid")


def forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr=None, zoneout_h=None, zoneout_c=None,
            drop_h=None):
    """Forward recurrence; see docs/design.md, "The kernel contract".

    gx (T,B,D*G*H) · h0 (D?,B,P) · c0 (D?,B,H) LSTM only · w_hh (D?,G*H,P) · b_hh (D?,G*H) or None ·
    lengths (B,) int32 on gx's device or None · w_hr (D?,P,H) LSTM projection or None. Returns y
    (T,B,D*P), hT (D?,B,P), cT (D?,B,H) or None, and saved (see saved_shapes) when need_grad, else ().
    The regularisers' masks (fusedrnn/regularisers.py; not with w_hr): zoneout_h (T,B,D*P),
    zoneout_c (T,B,D*H) LSTM only, drop_h shaped like h0; the regularised kernels run them.
    """
    stream, index = _launch_context(gx)
    timeouts.check()  # an earlier launch's timeout, found without synchronising
    D, lead, T, B, H, P = _dims(cell, gx, h0)
    dt, dev = gx.dtype, gx.device
    knobs = _knobs()
    y = _empty((T, B, D * P), dt, dev)
    hT = _empty(lead + (B, P), dt, dev)
    cT = _empty(lead + (B, H), dt, dev) if cell == "lstm" else None
    saved = [_empty(shape, sdt, dev)
             for shape, sdt in saved_shapes(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr)]
    ws, tier = _workspace(False, cell, dt, B, H, index, knobs, dev, P if w_hr is not None else 0, D)
    masks = _masks(zoneout_h, zoneout_c, drop_h)
    note = _C.forward(cell, bool(reverse), _arg(gx), _arg(h0), _arg(c0), _arg(w_hh), _arg(b_hh), _arg(lengths),
                      _arg(y), _arg(hT), _arg(cT), _arg(saved[0] if saved else None), _arg(ws), stream, index,
                      w_hr=_arg(w_hr), m=_arg(saved[1] if len(saved) > 1 else None), **knobs,
                      **{k: _arg(t) for k, t in masks.items()})
    _after_launch(note, ws, f"{cell} forward", tier)
    return y, hT, cT, tuple(saved)


def backward(cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y, saved, w_hr=None, zoneout_h=None,
             zoneout_c=None, drop_h=None):
    """Backward recurrence: d_gx (T,B,D*G*H) in gx's dtype, d_gh (the same tensor except for
    GRU, whose n gate differs: d_gh_n = r * d_gx_n), dh0 (D?,B,P), dc0 (D?,B,H) or None and,
    with a projection, dw_hr (D?,P,H) = Σ_t dh_tᵀ m_t (fp32 GEMM outside the loop). For the GRU
    with reset_after=False d_gh is d_gx: the caller's dW_hh pairs its n rows with r ⊙ h_{t-1}
    (common.recurrent_weight_grads). The masks: the forward's (the caller's dW_hh pairs d_gh
    with drop_h ⊙ h_{t-1}, library.py)."""
    stream, index = _launch_context(dy)
    timeouts.check()  # an earlier launch's timeout, found without synchronising
    proj = w_hr is not None
    if len(saved) != (2 if proj else 1):
        raise RuntimeError("cuda backward needs the tensors saved by forward(need_grad=True)")
    D, lead, T, B, H, P = _dims(cell, gx, h0)
    GH = GATES[cell] * H
    dt, dev = gx.dtype, gx.device
    knobs = _knobs()
    w_t = w_hh.transpose(-1, -2).contiguous()  # (D?, P, G*H): each CTA's slice is rows of W_hhᵀ
    w_hr_t = w_hr.transpose(-1, -2).contiguous() if proj else None  # (D?, H, P)
    d_gx = _empty((T, B, D * GH), dt, dev)
    d_gh = _empty((T, B, D * GH), dt, dev) if cell == "gru" else None
    dh0 = _empty(lead + (B, P), dt, dev)
    dc0 = _empty(lead + (B, H), dt, dev) if cell == "lstm" else None
    dh = _empty(lead + (T, B, P), torch.float32, dev) if proj else None
    ws, tier = _workspace(True, cell, dt, B, H, index, knobs, dev, P if proj else 0, D)
    masks = _masks(zoneout_h, zoneout_c, drop_h)
    note = _C.backward(cell, bool(reverse), _arg(dy.to(dt)), _arg(dhT.to(dt)),
                       _arg(dcT.to(dt) if dcT is not None else None), _arg(w_t), _arg(lengths), _arg(saved[0]),
                       _arg(d_gx), _arg(d_gh), _arg(dh0), _arg(dc0), _arg(ws), stream, index,
                       w_hr_t=_arg(w_hr_t), dh=_arg(dh), **knobs,
                       **{k: _arg(t) for k, t in masks.items()})
    _after_launch(note, ws, f"{cell} backward", tier)
    outs = (d_gx, (d_gh if d_gh is not None else d_gx), dh0, dc0)
    if not proj:
        return outs
    m = saved[1]
    dw_hr = torch.bmm(dh.reshape(D, T * B, P).transpose(1, 2), m.reshape(D, T * B, H))  # fp32 accumulation
    return outs + (dw_hr.reshape(w_hr.shape).to(w_hr.dtype),)


_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def step(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """One fused step of a cell (fusedrnn/ops/cell_step.py): (h (B,H), c (B,H) or None).

    x (B,I) · h0 (B,H) · c0 (B,H) LSTM only · w_ih (G*H,I) · w_hh (G*H,H) · b_ih, b_hh (G*H,) or
    None, all of one float dtype on one CUDA device. One launch reads each weight byte once
    (x W_ihᵀ + b_ih, h0 W_hhᵀ + b_hh and the pointwise update together); nothing is
    allocated but h and c, nothing synchronises: a CUDA graph can capture it.
    """
    if _C is None or not x.is_cuda:
        raise RuntimeError(f"fusedrnn cuda backend: {availability(x.device)}")
    lstm = cell == "lstm"
    B, I, H = step_args.check(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    dt, dev = x.dtype, x.device
    x, h0, w_ih, w_hh = x.contiguous(), h0.contiguous(), w_ih.contiguous(), w_hh.contiguous()
    c0, b_ih, b_hh = (t.contiguous() if t is not None else None for t in (c0, b_ih, b_hh))
    h = torch.empty((B, H), dtype=dt, device=dev)
    c = torch.empty((B, H), dtype=dt, device=dev) if lstm else None
    index = dev.index
    stream = _raw_stream(index) if _raw_stream is not None else torch.cuda.current_stream(dev).cuda_stream
    ptr = lambda t: t.data_ptr() if t is not None else 0  # noqa: E731
    _C.cell_step(cell, DTYPE_CODES[dt], B, I, H, x.data_ptr(), h0.data_ptr(), ptr(c0), w_ih.data_ptr(),
                 w_hh.data_ptr(), ptr(b_ih), ptr(b_hh), h.data_ptr(), ptr(c), stream, index)
    return h, c


def _require_extension():
    if _C is None:
        raise RuntimeError(availability(torch.device("cuda")))


def plan(cell: str, dtype: torch.dtype, batch: int, hidden_size: int, backward: bool = False,
         device: torch.device | int | None = None, mode: str | None = None, units: int | None = None,
         batch_rows: int | None = None, passes: int | None = None, proj_size: int = 0, directions: int = 1) -> dict:
    """How a call of this size runs on a CUDA device: tier, grid, cluster, units per CTA,
    batch groups, shared memory, workspace, the cost model's estimate and the reason."""
    _require_extension()
    index = torch.device(device).index if isinstance(device, (torch.device, str)) else device
    if index is None:
        index = torch.cuda.current_device()
    knobs = _knobs()
    pick = lambda name, value: knobs[name] if value is None else value  # noqa: E731
    return _C.plan(backward, cell, DTYPE_CODES[dtype], batch, hidden_size, index, mode or knobs["mode"],
                   pick("units", units), pick("batch_rows", batch_rows), pick("passes", passes), proj_size, directions,
                   machine=knobs["machine"])


def plan_for(cell: str, dtype: torch.dtype, batch: int, hidden_size: int, limits: dict | None = None,
             backward: bool = False, mode: str = "auto", units: int = 0, batch_rows: int = 0, passes: int = 0,
             proj_size: int = 0, directions: int = 1, max_active_cluster: int = 0, model: dict | None = None) -> dict:
    """The plan for a device described by `limits` (default: an H100, H100_LIMITS), without a GPU.
    max_active_cluster > 0 pins what the GPU path asks the device (cudaOccupancyMaxActiveClusters
    for the real kernel): clusters of more CTAs do not fit, and the plan falls back to smaller ones.
    model: the machine model whose constants the plan's cost model uses (default: machine.current(),
    so $FUSEDRNN_CALIBRATION's calibration file counts, as it does for the launches)."""
    _require_extension()
    return _C.plan_for(backward, cell, DTYPE_CODES[dtype], batch, hidden_size, dict(limits or H100_LIMITS), mode,
                       units, batch_rows, passes, proj_size, directions, max_active_cluster,
                       machine=machine.cxx_constants(model))


def step_plan_for(cell: str, dtype: torch.dtype, batch: int, input_size: int, hidden_size: int,
                  limits: dict | None = None) -> dict:
    """The geometry of the fused decode step (`step`) on a device described by `limits`, without a GPU."""
    _require_extension()
    return _C.cell_step_plan_for(cell, DTYPE_CODES[dtype], batch, input_size, hidden_size,
                                 dict(limits or H100_LIMITS))


def describe(cell: str, dtype, batch: int, hidden_size: int, device=None, proj_size: int = 0,
             directions: int = 1) -> str:
    """One clause for fusedrnn.explain: the tier each direction would run, and why."""
    try:
        parts = []
        for bwd in (False, True):
            p = plan(cell, dtype, batch, hidden_size, backward=bwd, device=device, proj_size=proj_size,
                     directions=directions)
            name = "backward" if bwd else "forward"
            parts.append(f"{name} on the {p['tier']} tier ({p['reason']})")
        return "; ".join(parts)
    except (RuntimeError, ValueError) as e:
        return f"no plan: {e}"
