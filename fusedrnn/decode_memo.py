"""A module's remembered decode path: what a no-grad call of one input shape resolved to, so the
next such call (a decode step) skips the backend choice and torch.nn's argument checks.

A fusedrnn module or cell whose call ran a backend's fused `step` (fusedrnn/ops/cell_step.py)
keeps, in its `__dict__` under MEMO, the call's key and what it resolved: the kernel backend's
import name and the expected state shapes (a sequence module also the layer weights it read).
A later call takes the remembered path only when

- it runs in plain eager mode with nothing for autograd to record (`plain_eager`, and no
  argument requiring grad while grad mode is on),
- its key matches: the input's shape, dtype and device, the module attributes the choice
  reads, and the stamp of what can change a choice — `fusedrnn.settings.generation` (a
  `settings.refresh()`) and `fusedrnn.backends.epoch` (a kernel backend registered or
  repointed); assigning `module.backend` drops the memo,
- and its per-call tensors pass the checks torch.nn would apply: each state's type, shape,
  dtype and device, each weight's identity (a swapped parameter, `functional_call`, a
  parametrization) and its dtype and device (`.to()`, `.double()`, `p.data = ...`).

Anything else takes the full path, which gives torch.nn's errors and remembers anew. Values
never matter: the kernels read the weights when they run, so in-place updates need nothing.
Pickling and copying drop the memo (FusedModuleBase.__getstate__).
"""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwad

from . import backends, settings

MEMO = "_decode_memo"


def plain_eager() -> bool:
    """No autocast, not traced or compiled, no torch.func transform and no forward-AD level: the
    conditions of cell_step.eager_without_autograd that do not depend on the tensors (those
    wrapped by a transform or carrying a tangent exist only under one)."""
    return not torch._C._is_any_autocast_enabled() and torch._C._functorch.peek_interpreter_stack() is None \
        and fwad._current_level < 0 and not torch._C._is_tracing() and not torch.compiler.is_compiling()


def stamp() -> tuple:
    """What a remembered choice depends on besides the call: the settings and the backends."""
    return settings.generation, backends.epoch


def same_device_and_dtype(tensors, dtype, device) -> bool:
    """Every tensor of `tensors` (None allowed) has `dtype` and sits on `device`."""
    for t in tensors:
        if t is not None and (t.dtype is not dtype or t.device != device):
            return False
    return True


def records_grad(tensors) -> bool:
    """Whether grad mode is on and a tensor of `tensors` (None allowed) requires grad."""
    if not torch.is_grad_enabled():
        return False
    return any(t is not None and t.requires_grad for t in tensors)


def state_ok(s, shape, dtype, device) -> bool:
    """A state tensor as the remembered call had it: a plain tensor of that shape, dtype and device."""
    return type(s) is torch.Tensor and s.shape == shape and s.dtype is dtype and s.device == device
