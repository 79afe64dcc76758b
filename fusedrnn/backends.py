"""Which backend runs a call, and why.

Names: "auto", "cuda" (the fusedrnn._C extension), "triton" (fused Triton kernels),
"reference" (the plain-PyTorch oracle) and "torch" (torch.nn's own implementation,
cuDNN on a GPU). The environment variable FUSEDRNN_BACKEND replaces "auto". On a GPU, "auto" follows the card's
dispatch table (fusedrnn.tuning) where it has one, else the heuristic: cuda, then triton,
then torch.

A kernel backend is a module exposing
    availability(device) -> str | None        why it cannot run on this device, or None
    unsupported(cell, dtype, hidden_size, proj_size, directions=1) -> str | None
    forward(...), backward(...)    the sequential kernels (docs/design.md, "The kernel contract")
`unsupported(..., directions=1)` decides whether the backend runs a call at all (proj_size
included); `directions=2` whether it runs both directions of a layer in one launch (else
each direction gets its own). A call with zoneout or recurrent-dropout masks ("regularised",
fusedrnn/regularisers.py) asks `unsupported(..., regularised=True)`; a backend whose
`unsupported` has no such keyword is taken to decline them. torch.nn computes no such call.
"""
from __future__ import annotations

import importlib
import sys
import warnings
from typing import NamedTuple

import torch

from . import onnx_export, settings, tuning
from .ops.common import GATES, TORCH_CELLS, check_int32_indexing, int32_overflow

BACKENDS = ("auto", "cuda", "triton", "reference", "torch")


class _KernelBackends(dict):
    """{name: import name} of the kernel backends; every change invalidates the remembered choices."""

    def _changed(self):
        forget_choices()

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key):
        super().__delitem__(key)
        self._changed()

    def clear(self):
        super().clear()
        self._changed()

    def update(self, *args, **kwargs):
        super().update(*args, **kwargs)
        self._changed()

    def pop(self, *args):
        out = super().pop(*args)
        self._changed()
        return out


#: choose_name's answers: {its arguments: name}, for the settings generation `_memo_generation`
_memo: dict = {}
_memo_generation = -1
_MEMO_MAX = 4096
#: incremented whenever the remembered choices are forgotten: a module's remembered decode path
#: (fusedrnn/decode_memo.py) is stamped with it
epoch = 0
KERNEL_BACKENDS = _KernelBackends(cuda="fusedrnn.ops.cuda", triton="fusedrnn.ops.triton")
ENV_VAR = "FUSEDRNN_BACKEND"
_warned: set[str] = set()


class Choice(NamedTuple):
    name: str
    reason: str


def forget_choices() -> None:
    """Forget the choices choose_name remembers (a kernel backend was registered or repointed),
    and with them every module's remembered decode path."""
    global epoch
    _memo.clear()
    epoch += 1


def check_name(name) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends are {', '.join(map(repr, BACKENDS))}")


def kernel_module(name: str):
    """Import a kernel backend's module; RuntimeError naming the cause if it cannot be imported."""
    mod = sys.modules.get(KERNEL_BACKENDS[name])
    if mod is not None:
        return mod
    try:
        return importlib.import_module(KERNEL_BACKENDS[name])
    except ImportError as e:  # triton not installed, extension not importable, ...
        raise RuntimeError(f"backend {name!r} cannot be imported: {e}") from e


def why_not(name: str, device: torch.device, cell: str | None = None, dtype=None,
            hidden_size: int | None = None, proj_size: int = 0, regularised: bool = False) -> str | None:
    """None if backend `name` can run this call, else the reason it cannot. `regularised`: the
    call carries zoneout or recurrent-dropout masks."""
    if name == "torch" and regularised:
        return NO_TORCH_REGULARISERS
    if name in ("torch", "reference"):
        return None
    try:
        mod = kernel_module(name)
    except RuntimeError as e:
        return str(e)
    reason = mod.availability(device)
    if reason is None and cell is not None:
        reason = mod.unsupported(cell, dtype, hidden_size, proj_size)
    if reason is None and regularised:
        try:
            reason = mod.unsupported(cell, dtype, hidden_size, proj_size, regularised=True)
        except TypeError:  # a backend that predates the regularisers' masks
            reason = f"backend {name!r} takes no zoneout or recurrent-dropout masks"
    return reason


#: why torch.nn cannot run a call with zoneout or recurrent dropout
NO_TORCH_REGULARISERS = ("torch.nn has no zoneout or recurrent dropout (zoneout=, zoneout_cell=, recurrent_dropout=); "
                         "the 'cuda' (torch.nn's cells, no proj_size), 'triton' and 'reference' backends run them")


def why_not_two_directions(name: str, cell: str, dtype, hidden_size: int, proj_size: int = 0) -> str | None:
    """None if backend `name` runs both directions of a layer in one launch, else why not (each
    direction then runs as its own call). The reference runs any layer; torch.nn is not asked."""
    if name in ("torch", "reference"):
        return None
    return kernel_module(name).unsupported(cell, dtype, hidden_size, proj_size, directions=2)


@torch.compiler.assume_constant_result
def runs_two_directions(name: str, cell: str, dtype, hidden_size: int, proj_size: int = 0) -> bool:
    """`why_not_two_directions(...) is None`, a constant under torch.compile (see choose_name)."""
    return why_not_two_directions(name, cell, dtype, hidden_size, proj_size) is None


def available_backends() -> dict[str, tuple[bool, str]]:
    """Each backend name with whether it can run on this machine and, if not, why.

    Asked without an input: each backend is probed on this machine's CUDA device if it has
    one, else on the CPU (the cuda backend always on a CUDA device, which may be missing)."""
    has_cuda = torch.cuda.is_available()
    device = torch.device("cuda") if has_cuda else torch.device("cpu")
    if has_cuda:
        table = tuning.table_for(device)
        how = (f"what the dispatch table {table.path.name} ranks fastest" if table is not None
               else "cuda, then triton, then torch (no dispatch table for this card)")
    else:
        how = "torch"
    out = {"auto": (True, f"picks per call; inputs on {device.type} run {how}")}
    for name in BACKENDS[1:]:
        if name == "cuda" and not has_cuda:
            reason = why_not(name, torch.device("cuda")) or \
                "this machine has no CUDA device (torch.cuda.is_available() is False)"
        else:
            reason = why_not(name, device)
        out[name] = (reason is None, reason or f"can run on {device.type}")
    return out


def requested_name(requested: str) -> str:
    check_name(requested)
    env = settings.get(ENV_VAR) if requested == "auto" else None
    if env:
        if env not in BACKENDS:
            raise ValueError(f"{ENV_VAR}={env!r} is not a backend; valid backends are {', '.join(map(repr, BACKENDS))}")
        return env
    return requested


def choose(requested: str, device: torch.device, cell: str, dtype, hidden_size: int,
           proj_size: int = 0, warn: bool = True, *, batch: int | None = None, steps: int | None = None,
           grad: bool = False, directions: int = 1, regularised: bool = False) -> Choice:
    """Resolve a requested backend for one call; RuntimeError if an explicit one cannot run.

    `batch`, `steps` (1 for a cell or a T=1 call) and `grad` (autograd records the call)
    place the call in a shape class of the card's dispatch table (fusedrnn.tuning); None
    where unknown. With `batch` and `steps` known, a call too large for the kernels' 32-bit
    offsets (T*B*D*G*H or D*G*H*P above 2**31 - 1, `directions` = D) runs torch.nn under
    'auto' and raises ValueError for an explicit kernel backend, before anything is allocated.
    `regularised`: the call carries zoneout or recurrent-dropout masks, which torch.nn cannot
    compute (like a cell outside TORCH_CELLS: 'auto' never runs torch.nn for it)."""
    name = requested_name(requested)
    if name == "torch" and cell not in TORCH_CELLS:
        raise RuntimeError(f"fusedrnn backend 'torch' cannot run this call: {no_torch_twin(cell)}")
    if name == "torch" and regularised:
        raise RuntimeError(f"fusedrnn backend 'torch' cannot run this call: {NO_TORCH_REGULARISERS}")
    if name != "torch" and onnx_export.exporting():
        return Choice(*onnx_export.backend_for_export(name, cell, proj_size, regularised))
    if name == "auto":
        if cell not in TORCH_CELLS or regularised:
            return _auto_without_torch(device, cell, dtype, hidden_size, proj_size, batch, steps, directions,
                                       regularised)
        if device.type != "cuda":
            return Choice("torch", f"the input is on {device.type}, where 'auto' runs torch.nn's own implementation")
        return _auto_on_cuda(device, cell, dtype, hidden_size, proj_size, warn, batch, steps, grad, directions)
    why = why_not(name, device, cell, dtype, hidden_size, proj_size, regularised)
    if why is not None:
        raise RuntimeError(f"fusedrnn backend {name!r} cannot run this call: {why}")
    if name in KERNEL_BACKENDS and batch is not None and steps is not None and cell in GATES:
        check_int32_indexing(steps, batch, GATES[cell], hidden_size, proj_size or hidden_size, directions)
    return Choice(name, f"backend {name!r} was requested" + (f" (through {ENV_VAR})" if name != requested else ""))


def no_torch_twin(cell: str) -> str:
    """Why torch.nn cannot compute `cell` (one outside TORCH_CELLS)."""
    return (f"torch.nn has no GRU with reset_after=False (cell {cell!r}: the reset gate applied before the "
            "recurrent product); the 'cuda', 'triton' and 'reference' backends run it")


def _auto_without_torch(device, cell, dtype, hidden_size, proj_size, batch, steps, directions,
                        regularised=False) -> Choice:
    """'auto' for a call torch.nn does not compute (GRU with reset_after=False, zoneout, recurrent
    dropout): on a GPU the first fused backend that supports it, else the reference; never torch.nn
    (it would compute another function), and no dispatch table (it was measured on torch.nn's cells)."""
    not_torch = f"torch.nn cannot run it ({no_torch_twin(cell) if cell not in TORCH_CELLS else NO_TORCH_REGULARISERS})"
    if device.type != "cuda":
        return Choice("reference", f"the input is on {device.type}, where 'auto' runs torch.nn, but {not_torch}; "
                                   "'auto' picked the reference backend")
    reasons = []
    too_large = _too_large(cell, hidden_size, proj_size, batch, steps, directions)
    for cand in ("cuda", "triton"):
        why = why_not(cand, device, cell, dtype, hidden_size, proj_size, regularised) or too_large
        if why is None:
            return Choice(cand, f"'auto' picked {cand}, the first fused backend that supports this call ({not_torch})")
        reasons.append(f"{cand}: {why}")
    return Choice("reference", "'auto' picked the reference backend because " + "; ".join(reasons)
                  + f", and {not_torch}")


def _too_large(cell, hidden_size, proj_size, batch, steps, directions) -> str | None:
    """Why this call is too large for the kernels' 32-bit offsets, or None (also where sizes are unknown)."""
    if batch is None or steps is None or cell not in GATES:
        return None
    return int32_overflow(steps, batch, GATES[cell], hidden_size, proj_size or hidden_size, directions)


def _auto_on_cuda(device, cell, dtype, hidden_size, proj_size, warn, batch, steps, grad, directions=1) -> Choice:
    """The card's dispatch table if it has an entry for this call, else the heuristic:
    the first fused backend that supports the call (cuda, then triton), else torch.nn.
    A call too large for the kernels' 32-bit offsets runs torch.nn whatever the table says."""
    too_large = _too_large(cell, hidden_size, proj_size, batch, steps, directions)

    def why_not_here(cand):
        return why_not(cand, device, cell, dtype, hidden_size, proj_size) or too_large

    table = tuning.table_for(device)
    hit = table.lookup(cell, dtype, "fwbw" if grad else "fw", steps, batch, hidden_size) if table else None
    if hit is not None:
        passed_over = {}
        for cand in hit.entry.ranking:
            why = None if cand == "torch" else why_not_here(cand)
            if why is None:
                return Choice(cand, hit.reason(cand, passed_over))
            passed_over[cand] = why
    if table is None:
        source = f"no dispatch table for this card ({tuning.card_name(device) or 'unknown'}), heuristic"
    else:
        what = f"{cell} {tuning.DTYPE_NAMES.get(dtype, dtype)} {'fwbw' if grad else 'fw'} {tuning.kind_of(steps) or ''}"
        source = f"the dispatch table {table.path.name} has no entry for {what.rstrip()}, heuristic"
    if too_large is not None:  # one reason for both kernel backends; warned once per cell, not per size
        return _fall_back(f"'auto' fell back to torch.nn (cuDNN) because the call is too large for the fused "
                          f"kernels: {too_large} ({source})", warn, key=f"too large: {cell}")
    reasons = []
    for cand in ("cuda", "triton"):
        why = why_not(cand, device, cell, dtype, hidden_size, proj_size)
        if why is None:
            return Choice(cand, f"'auto' picked {cand}, the first fused backend that supports this call ({source})")
        reasons.append(f"{cand}: {why}")
    return _fall_back("'auto' fell back to torch.nn (cuDNN) because " + "; ".join(reasons) + f" ({source})", warn)


def _fall_back(reason: str, warn: bool, key: str | None = None) -> Choice:
    """Choice torch.nn for `reason`, warning once per distinct `key` (default: the reason)."""
    key = reason if key is None else key
    if warn and key not in _warned:
        _warned.add(key)
        warnings.warn("fusedrnn: " + reason, RuntimeWarning, stacklevel=5)
    return Choice("torch", reason)


def table_sizes(batch, steps) -> tuple:
    """(batch, steps) as `choose` takes them: (None, None) under torch.compile, where sizes may
    be symbolic (the table is then read by cell, dtype, mode and hidden size alone)."""
    return (None, None) if torch.compiler.is_compiling() else (batch, steps)


@torch.compiler.assume_constant_result
def choose_name(requested: str, device: torch.device, cell: str, dtype, hidden_size: int,
                proj_size: int = 0, batch: int | None = None, steps: int | None = None, grad: bool = False,
                directions: int = 1, regularised: bool = False) -> str:
    """`choose(...).name`; torch.compile runs it once while tracing and keeps the name as a
    constant (guarded through its arguments: module attributes, the tensor's device and
    dtype), so importing and probing a backend never lands in a graph. FUSEDRNN_BACKEND
    is read when a graph is traced, not at every call of a compiled model. Callers pass
    `batch` and `steps` through `table_sizes` (never a symbolic size).

    Eager calls remember each answer (a decode step asks per call): the choice is a pure function
    of these arguments, the settings (fusedrnn.settings) and the kernel backends registered, and
    a change of either forgets every answer. A choice that raises is not remembered."""
    global _memo_generation
    if onnx_export.exporting():
        return choose(requested, device, cell, dtype, hidden_size, proj_size, batch=batch, steps=steps, grad=grad,
                      directions=directions, regularised=regularised).name
    if _memo_generation != settings.generation or len(_memo) > _MEMO_MAX:
        _memo.clear()
        _memo_generation = settings.generation
    key = (requested, device, cell, dtype, hidden_size, proj_size, batch, steps, grad, directions, regularised)
    name = _memo.get(key)
    if name is None:
        name = _memo[key] = choose(requested, device, cell, dtype, hidden_size, proj_size, batch=batch, steps=steps,
                                   grad=grad, directions=directions, regularised=regularised).name
    return name
