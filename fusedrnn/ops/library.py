"""The op layer of the kernel backends: torch.library custom ops that graphs record, the same
forward and backward as an autograd.Function for eager autograd, and a direct call without
autograd. One implementation of each (`_forward`, `_backward`, `_gradients`) serves all three.

    fusedrnn::rnn_layer_forward(kernels, cell, gx, h0, c0?, w_hh, b_hh?, lengths?, reverse, need_grad,
                                w_hr?=None, zoneout_h?=None, zoneout_c?=None, drop_h?=None)
        -> [y (T,B,D*P), hT like h0, cT like c0 or (0,), y_saved like y or (0,), *saved]
    fusedrnn::rnn_layer_backward(kernels, cell, dy, dhT, dcT?, gx, h0, c0?, w_hh, b_hh?, lengths?,
                                 reverse, y_saved, saved, w_hr?=None, zoneout_h?=None, zoneout_c?=None,
                                 drop_h?=None)
        -> [d_gx like gx, dh0 like h0, dc0 like c0 or (0,), dW_hh like w_hh, db_hh like b_hh or (0,),
            dW_hr like w_hr or (0,)]

The shapes are contract v2's (docs/design.md, "The kernel contract"): D = 1 for h0 (B,P), D = 2 (both
directions of a layer in one call) for h0 (2,B,P); w_hr (P,H) or (2,P,H) is the LSTM
projection; zoneout_h (T,B,D*P), zoneout_c (T,B,D*H) and drop_h (like h0) are the regularisers'
masks (fusedrnn/regularisers.py: inputs, never differentiated). The ops are named for what
they run — one layer, one or both directions — and were renamed when w_hr and D = 2 changed
their schema: torch's compile caches key on the op name, so a graph cached for an older
layout can never be loaded for this one. The masks were added as trailing optional
arguments (default None), so a graph recorded before them still calls the same function.

`kernels` names the backend module (its import name, e.g. "fusedrnn.ops.triton"); the
ops import it on first use, and only if it is one of the package's own backends or was
registered with `register_kernels` (every path checks: the op, its fake implementation, the
backward op and the eager shortcut), since a scripted or saved graph carries the string. The backward op also computes the weight gradients of W_hh and
b_hh (GEMMs outside the time loop, per direction), so its outputs are plain gradients with
no aliasing; the backend returns dW_hr itself. A backend gets `w_hr` (keyword) only when a
projection is given, and a mask (keyword) only when it is given.
In plain eager mode (`plain_eager`) the dispatcher is skipped: a call that autograd does not
record (no_grad, inference, or no argument requiring grad) calls the backend's forward
directly, and one it records runs `EagerRecurrence`, an autograd.Function around the same
forward and backward (a custom op recorded by autograd costs several times a whole torch.nn
step in host time). Both ops have fake (meta) implementations — the forward asks the backend
module for `saved_shapes(...)` — and the forward has its autograd registered, so dynamo,
AOTAutograd and torch.jit.trace record them with no graph break.

Custom ops may not return a tensor that aliases an input or another output; the real
implementations clone any output a backend returns as a view (e.g. hT = y[-1]) or at an
input's address.

`y_saved` is a private copy of `y` (only with need_grad): autograd saves it instead of
the `y` the user receives, so an in-place op on the output (`y += x`, which torch.nn's
composite CPU path allows) bumps no version counter that backward checks. The backward reads
only `y_saved`: the backend's `backward(..., y, saved)` gets it as `y`, and so does the
weight-gradient GEMM (`prev_states`).

Every tensor reaches a backend contiguous: `kernel_args` (once, where the backend is called)
makes each argument, `lengths` included, contiguous (a strided or stride-0 view would otherwise be read as raw memory
by a kernel that computes its own offsets), and the backward op does the same with the
incoming gradients.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from typing import List, Optional

import torch
from torch import Tensor

from .. import backends
from .autodiff import reference_gradients, refuse_transformed
from .common import recurrent_weight_grads, reset_before_args


#: the kernel backends the package ships (import names), snapshotted before any test repoints a name
BUILTIN_KERNELS = frozenset(backends.KERNEL_BACKENDS.values())
_registered: set = set()


def register_kernels(import_name: str) -> None:
    """Let the custom ops run the kernel backend module `import_name` (a stand-in, e.g. the
    tests' plain-PyTorch kernels). The ops' `kernels` argument is a string that a scripted or
    saved graph carries too: the ops import and run only the package's own backends and the
    modules registered here, never a name taken from a file."""
    if not isinstance(import_name, str) or not import_name:
        raise TypeError(f"fusedrnn.ops.library.register_kernels takes a module's import name, got {import_name!r}")
    _registered.add(import_name)
    backends.forget_choices()


def allowed_kernels() -> tuple:
    return tuple(sorted(BUILTIN_KERNELS | _registered))


def kernels_module(name: str):
    """The backend module named `name` (already imported, or imported now); ValueError unless
    it is one of allowed_kernels()."""
    if not isinstance(name, str) or name not in BUILTIN_KERNELS | _registered:
        raise ValueError(f"fusedrnn: kernel backend {name!r} is not registered; the fusedrnn ops run only "
                         f"{', '.join(map(repr, allowed_kernels()))} (a stand-in backend must be registered "
                         "with fusedrnn.ops.library.register_kernels)")
    mod = sys.modules.get(name)
    return mod if mod is not None else importlib.import_module(name)


#: Triton's CPU interpreter (TRITON_INTERPRET=1) patches triton.language module-wide while a
#: kernel runs, so launches from two threads at once break each other (InterpreterError): under
#: it, launches take turns. On a GPU nothing is shared between calls (each launch allocates its
#: own outputs, workspace and barrier counters), so no lock is taken there.
_interpreter_lock = threading.Lock()


#: read once, as Triton itself decides at import whether it interprets
_INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
_NO_LOCK = contextlib.nullcontext()


def one_launch_at_a_time():
    """The lock a kernel launch holds under the interpreter; a no-op context otherwise."""
    return _interpreter_lock if _INTERPRETING else _NO_LOCK


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


def _no_autocast(device_type: str):
    """A backward run inside an autocast region must not downcast the kernels' float32 math."""
    if torch._C._is_any_autocast_enabled() and torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _storage_ptr(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _unaliased(outs: list, inputs) -> list:
    """Clone outputs that are views (of an input, another output or a backend's own buffer) or
    that start at an input's or an earlier output's address (the same memory without a view, as
    x.detach() gives): autograd refuses an in-place op on a view returned by a function with
    several outputs, and torch.nn's outputs may be modified in place. (Data pointers, not
    storages: asking each tensor for its storage object costs a large part of a decode step.)"""
    # an empty input's address may be anything: at worst an output is copied needlessly
    seen = {t.data_ptr() for t in inputs if t is not None}
    res = []
    for t in outs:
        if t.numel():
            ptr = t.data_ptr()
            if ptr in seen or t._is_view():
                t = t.clone()
                ptr = t.data_ptr()
            seen.add(ptr)
        res.append(t)
    return res


def kernel_args(gx, h0, c0, w_hh, b_hh, lengths, w_hr=None):
    """The arguments as every kernel may read them: contiguous (a strided or stride-0 view
    copied), lengths as int32 on gx's device. None stays None."""
    if lengths is not None:
        lengths = lengths.to(device=gx.device, dtype=torch.int32)
    return tuple(t.contiguous() if t is not None else None for t in (gx, h0, c0, w_hh, b_hh, lengths, w_hr))


def projection(w_hr, masks=(None, None, None)) -> dict:
    """The keywords a backend call gets for the projection and the regularisers' masks
    (zoneout_h, zoneout_c, drop_h): none for what is absent."""
    kw = {} if w_hr is None else {"w_hr": w_hr}
    kw.update((k, m.contiguous()) for k, m in zip(MASKS, masks) if m is not None)
    return kw


#: the regularisers' mask arguments, in the ops' order
MASKS = ("zoneout_h", "zoneout_c", "drop_h")


def mask_tuple(masks: dict) -> tuple:
    """(zoneout_h, zoneout_c, drop_h) from keywords, None where absent."""
    return tuple(masks.get(k) for k in MASKS)


def saved_shapes(mod, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr=None, masks=(None,) * 3):
    fn = getattr(mod, "saved_shapes", None)
    if fn is None:
        raise NotImplementedError(
            f"kernel backend {mod.__name__} has no saved_shapes(...); it runs in eager mode but "
            "torch.compile / meta tensors need it (docs/design.md, \"The kernel contract\")")
    # shapes only: fake masks are never made contiguous
    kw = {} if w_hr is None else {"w_hr": w_hr}
    kw.update((k, m) for k, m in zip(MASKS, masks) if m is not None)
    return fn(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, **kw)


def directions(h0: Tensor) -> int:
    return h0.shape[0] if h0.dim() == 3 else 1


# -- forward --------------------------------------------------------------------------

def _forward(kernels: str, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr, masks) -> list:
    """The forward op's outputs: [y, hT, cT or (0,), y_saved or (0,), *saved], none aliased."""
    mod = kernels_module(kernels)
    gx, h0, c0, w_hh, b_hh, lengths, w_hr = kernel_args(gx, h0, c0, w_hh, b_hh, lengths, w_hr)
    with one_launch_at_a_time():
        y, hT, cT, saved = mod.forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad,
                                       **projection(w_hr, masks))
    outs = _unaliased([y, hT, cT if cT is not None else _empty(gx), *saved],
                      (gx, h0, c0, w_hh, b_hh, lengths, w_hr, *masks))
    y_saved = outs[0].clone() if need_grad else _empty(gx)  # what backward reads; the user never sees it
    return [*outs[:3], y_saved, *outs[3:]]


@torch.library.custom_op("fusedrnn::rnn_layer_forward", mutates_args=())
def recurrence_forward(kernels: str, cell: str, gx: Tensor, h0: Tensor, c0: Optional[Tensor], w_hh: Tensor,
                       b_hh: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
                       need_grad: bool, w_hr: Optional[Tensor] = None, zoneout_h: Optional[Tensor] = None,
                       zoneout_c: Optional[Tensor] = None, drop_h: Optional[Tensor] = None) -> List[Tensor]:
    return _forward(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr,
                    (zoneout_h, zoneout_c, drop_h))


@recurrence_forward.register_fake
def _recurrence_forward_fake(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr=None,
                             zoneout_h=None, zoneout_c=None, drop_h=None):
    T, B, _ = gx.shape
    y_width = directions(h0) * h0.shape[-1]  # D*P
    shapes = saved_shapes(kernels_module(kernels), cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr,
                          (zoneout_h, zoneout_c, drop_h))
    return [gx.new_empty(T, B, y_width), torch.empty_like(h0),
            torch.empty_like(c0) if c0 is not None else _empty(gx),
            gx.new_empty(T, B, y_width) if need_grad else _empty(gx),
            *[gx.new_empty(shape, dtype=dtype) for shape, dtype in shapes]]


# -- backward -------------------------------------------------------------------------

def _backward(kernels: str, cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y_saved, saved,
              w_hr, masks) -> list:
    """The backward op's outputs: [d_gx, dh0, dc0 or (0,), dW_hh, db_hh or (0,), dW_hr or (0,)]."""
    mod = kernels_module(kernels)
    gx, h0, c0, w_hh, b_hh, lengths, w_hr = kernel_args(gx, h0, c0, w_hh, b_hh, lengths, w_hr)
    dy, dhT, dcT, y_saved = (t.contiguous() if t is not None else None for t in (dy, dhT, dcT, y_saved))
    saved = [t.contiguous() for t in saved]
    with one_launch_at_a_time():
        d_gx, d_gh, dh0, dc0, *dw_hr = mod.backward(cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse,
                                                    y_saved, tuple(saved), **projection(w_hr, masks))
    # dW_hh and db_hh are fresh results of GEMMs and reductions: only the backend's outputs can alias
    d_gx, dh0, dc0, dw_hr = _unaliased([d_gx, dh0, dc0 if dc0 is not None else _empty(gx),
                                        dw_hr[0] if w_hr is not None else _empty(gx)],
                                       (dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, y_saved, w_hr, *saved,
                                        *masks))
    dw, db = recurrent_weight_grads(d_gh, y_saved, h0, lengths, reverse, b_hh is not None, w_hh.dtype,
                                    **reset_before_args(cell, gx, w_hh, b_hh), drop_h=masks[2])
    return [d_gx, dh0, dc0, dw, db if db is not None else _empty(gx), dw_hr]


@torch.library.custom_op("fusedrnn::rnn_layer_backward", mutates_args=())
def recurrence_backward(kernels: str, cell: str, dy: Tensor, dhT: Tensor, dcT: Optional[Tensor], gx: Tensor,
                        h0: Tensor, c0: Optional[Tensor], w_hh: Tensor, b_hh: Optional[Tensor],
                        lengths: Optional[Tensor], reverse: bool, y_saved: Tensor, saved: List[Tensor],
                        w_hr: Optional[Tensor] = None, zoneout_h: Optional[Tensor] = None,
                        zoneout_c: Optional[Tensor] = None, drop_h: Optional[Tensor] = None) -> List[Tensor]:
    return _backward(kernels, cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y_saved, saved, w_hr,
                     (zoneout_h, zoneout_c, drop_h))


@recurrence_backward.register_fake
def _recurrence_backward_fake(kernels, cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y_saved, saved,
                              w_hr=None, zoneout_h=None, zoneout_c=None, drop_h=None):
    like = lambda t: torch.empty_like(t) if t is not None else _empty(gx)  # noqa: E731
    return [like(gx), like(h0), like(c0), like(w_hh), like(b_hh), like(w_hr)]


# -- autograd -------------------------------------------------------------------------

def _gradients(kernels, cell, reverse, saved_tensors, grads, backward) -> tuple:
    """(d_gx, dh0, dc0, dW_hh, db_hh, dW_hr), None where an argument is None, from the incoming
    gradients of (y, hT, cT) (None where absent) and what the forward saved: (gx, h0, c0, w_hh,
    b_hh, lengths, w_hr, zoneout_h, zoneout_c, drop_h, y_saved, *saved). `backward`: the backward
    op or its implementation."""
    gx, h0, c0, w_hh, b_hh, lengths, w_hr, zh, zc, dh, y_saved, *saved = saved_tensors
    masks = (zh, zc, dh)
    if torch.is_grad_enabled():  # backward(create_graph=True): the backward kernels are not differentiable
        with _no_autocast(gx.device.type):
            return reference_gradients(cell, reverse, grads[:3], gx, h0, c0, w_hh, b_hh, lengths, w_hr,
                                       dict(zip(MASKS, masks)))

    def grad_or_zeros(g, like):  # made contiguous where the backend is called (_backward)
        return torch.zeros_like(like) if g is None else g

    dy, dhT = grad_or_zeros(grads[0], y_saved), grad_or_zeros(grads[1], h0)
    dcT = grad_or_zeros(grads[2], c0) if c0 is not None else None
    with _no_autocast(gx.device.type):
        if backward is recurrence_backward:  # the op: masks as its keywords, only those given
            extra = {k: m for k, m in zip(MASKS, masks) if m is not None}
            d_gx, dh0, dc0, dw, db, dw_hr = backward(kernels, cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths,
                                                     reverse, y_saved, saved, w_hr, **extra)
        else:
            d_gx, dh0, dc0, dw, db, dw_hr = backward(kernels, cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths,
                                                     reverse, y_saved, saved, w_hr, masks)
    return (d_gx, dh0, dc0 if c0 is not None else None, dw, db if b_hh is not None else None,
            dw_hr if w_hr is not None else None)


def _setup_context(ctx, inputs, output):
    kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, *rest = inputs
    w_hr, zh, zc, dh = (*rest, None, None, None, None)[:4]
    ctx.kernels, ctx.cell, ctx.reverse = kernels, cell, reverse
    # output[3] (y_saved), never the user's y (output[0]): in-place ops on y stay legal
    ctx.save_for_backward(gx, h0, c0, w_hh, b_hh, lengths, w_hr, zh, zc, dh, *output[3:])


def _op_backward(ctx, grads):
    d_gx, dh0, dc0, dw, db, dw_hr = _gradients(ctx.kernels, ctx.cell, ctx.reverse, ctx.saved_tensors, grads,
                                               recurrence_backward)
    grads = (None, None, d_gx, dh0, dc0, dw, db, None, None, None, dw_hr, None, None, None)
    # the dispatcher hands the autograd kernel no trailing argument left at its default: one
    # gradient per argument it received (dw_hr only when w_hr or a mask was given; masks get none),
    # as many as needs_input_grad has entries (setup_context may see the defaults filled in)
    return grads[:len(ctx.needs_input_grad)]


torch.library.register_autograd("fusedrnn::rnn_layer_forward", _op_backward, setup_context=_setup_context)


class EagerRecurrence(torch.autograd.Function):
    """The forward op's autograd in plain eager mode, as an autograd.Function: the same forward
    and backward implementations and the same saved tensors as the op, without the dispatcher's
    round trips (each recorded op call costs several times a whole torch.nn step on the host).
    Graphs (torch.compile, torch.jit.trace, tensor subclasses) record the op instead."""

    @staticmethod
    def forward(ctx, kernels, cell, reverse, lengths, gx, h0, c0, w_hh, b_hh, w_hr, zh=None, zc=None, dh=None):
        outs = _forward(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, True, w_hr, (zh, zc, dh))
        ctx.kernels, ctx.cell, ctx.reverse = kernels, cell, reverse
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(gx, h0, c0, w_hh, b_hh, lengths, w_hr, zh, zc, dh, *outs[3:])
        ctx.mark_non_differentiable(*outs[3:])
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        return (None, None, None, None, *_gradients(ctx.kernels, ctx.cell, ctx.reverse, ctx.saved_tensors, grads,
                                                    _backward), None, None, None)


def recurrence(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr=None, *, via=None, **masks):
    """Run the recurrence of backend `kernels` (a module or its import name): for one direction
    (h0 (B,P)) or both (h0 (2,B,P), the backend having declared them); a RuntimeError under a
    torch.func transform or forward-mode AD (fusedrnn/ops/autodiff.py). `via` forces one way:
    "op" (the custom op, recorded by autograd) or "function" (EagerRecurrence); by default as
    run_layer chooses. `masks`: zoneout_h, zoneout_c, drop_h where given (fusedrnn/regularisers.py).

    Returns (y, hT, cT) for lstm, (y, hT) otherwise; differentiable in gx, h0, c0, w_hh, b_hh, w_hr.
    """
    name = kernels if isinstance(kernels, str) else kernels.__name__
    refuse_transformed(name, gx, h0, c0, w_hh, b_hh, lengths, w_hr, *masks.values())
    if via is None:
        return run_layer(name, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr, **masks)
    if via == "op":
        outs = recurrence_forward(name, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, _need_grad(gx, h0, c0, w_hh,
                                                                                                   b_hh, w_hr), w_hr,
                                  **masks)
    else:
        outs = EagerRecurrence.apply(name, cell, reverse, lengths, gx, h0, c0, w_hh, b_hh, w_hr, *mask_tuple(masks))
    return (outs[0], outs[1], outs[2]) if cell == "lstm" else (outs[0], outs[1])


def _need_grad(*tensors) -> bool:
    # torch.jit.trace bakes need_grad into the graph as a constant, and its sanity check re-traces
    # under no_grad: while tracing, save for backward whenever an argument requires grad
    return (torch.is_grad_enabled() or torch.jit.is_tracing()) and any(
        t is not None and t.requires_grad for t in tensors)


def run_layer(kernels: str, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr=None, **masks):
    """`recurrence` for fusedrnn.ops, which has already sent transformed calls to the reference:
    in plain eager mode EagerRecurrence when autograd records the call, else the backend's forward
    called directly; the forward op while traced or compiled. `masks`: the regularisers' keywords given."""
    need_grad = _need_grad(gx, h0, c0, w_hh, b_hh, w_hr)
    if not plain_eager(gx):
        outs = recurrence_forward(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad, w_hr, **masks)
    elif need_grad:
        outs = EagerRecurrence.apply(kernels, cell, reverse, lengths, gx, h0, c0, w_hh, b_hh, w_hr, *mask_tuple(masks))
    else:
        outs = _forward_without_autograd(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr,
                                         mask_tuple(masks))
    return (outs[0], outs[1], outs[2]) if cell == "lstm" else (outs[0], outs[1])


def plain_eager(gx: Tensor) -> bool:
    """True outside torch.compile, torch.jit.trace and tensor subclasses (fake, functional,
    functorch-wrapped tensors): there the custom op must be recorded or dispatched."""
    return type(gx) is Tensor and not torch.compiler.is_compiling() and not torch.jit.is_tracing() \
        and not torch._C._functorch.is_functorch_wrapped_tensor(gx)


def _forward_without_autograd(kernels, cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr=None,
                              masks=(None, None, None)) -> list:
    """What recurrence_forward computes with need_grad=False, called directly: with nothing
    for autograd to record, the dispatcher's round trip through the custom op (tens of µs of
    Python per call, the bulk of a decode step's host time) buys nothing."""
    mod = kernels_module(kernels)
    gx, h0, c0, w_hh, b_hh, lengths, w_hr = kernel_args(gx, h0, c0, w_hh, b_hh, lengths, w_hr)
    with one_launch_at_a_time():
        y, hT, cT, _ = mod.forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, False, **projection(w_hr, masks))
    # the outputs are tensors the backend allocated: only hT or cT given as a view of y can alias
    y_storage = _storage_ptr(y)
    hT = hT.clone() if _storage_ptr(hT) == y_storage else hT
    if cT is None:
        cT = _empty(gx)
    elif _storage_ptr(cT) in (y_storage, _storage_ptr(hT)):
        cT = cT.clone()
    return [y, hT, cT]
