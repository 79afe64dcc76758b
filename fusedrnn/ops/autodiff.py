"""What the kernel backends' custom ops cannot differentiate themselves, done by the reference.

The kernels come with one backward (fusedrnn/ops/library.py): reverse mode, first order. They
have no forward-mode rule (torch.func.jvp, torch.autograd.forward_ad), no batching rule
(torch.func.vmap), functorch's grad transforms cannot run a custom op's autograd
(torch.func.grad, jacrev), and the backward kernels are not differentiable themselves. So:

- a call under a torch.func transform or carrying forward-mode tangents (`transformed`) runs the
  reference recurrence (plain PyTorch, which all of these differentiate and batch) instead of
  the kernels — the kernels would return zero tangents or fail with functorch's messages;
- a backward that must itself be differentiable (`backward(create_graph=True)`, double
  backward) differentiates a reference recomputation on the saved inputs
  (`reference_gradients`) instead of calling the backward kernels.

docs/integration.md lists what runs where.
"""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwad

from . import reference


def transformed(*tensors) -> bool:
    """True when a tensor among `tensors` (None allowed) is wrapped by a torch.func transform
    (grad, jacrev, jvp, vmap, ...) or, inside a forward-AD dual level, carries a tangent. Always
    False while torch.compile traces (dynamo cannot trace the check; it applies in eager mode)."""
    # no transform running and no dual level open: nothing can be wrapped or carry a tangent
    if torch._C._functorch.peek_interpreter_stack() is None and fwad._current_level < 0:
        return False
    if torch.compiler.is_compiling():
        return False
    ts = [t for t in tensors if isinstance(t, torch.Tensor)]
    if any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in ts):
        return True
    return fwad._current_level >= 0 and any(fwad.unpack_dual(t).tangent is not None for t in ts)


def refuse_transformed(kernels: str, *tensors) -> None:
    """A RuntimeError, naming the backend and the fix, where `transformed(*tensors)`: for callers
    of the custom op itself, which would otherwise return zero tangents or fail obscurely."""
    if transformed(*tensors):
        raise RuntimeError(
            f"fusedrnn: the kernels of {kernels} have no forward-mode (jvp, forward_ad) or batching (vmap) "
            "rule and do not run under torch.func transforms; call fusedrnn.ops.recurrence or the "
            "fusedrnn modules and cells (they compute such calls with the reference recurrence), or "
            "use backend='reference'")


def reference_gradients(cell, reverse, grads, gx, h0, c0, w_hh, b_hh, lengths, w_hr, masks=None):
    """(d_gx, dh0, dc0, dW_hh, db_hh, dW_hr), differentiable (create_graph), from the reference
    recurrence recomputed on the saved inputs; `grads` the incoming gradients of (y, hT[, cT]),
    None where absent. None for an argument that is None or requires no grad. `masks`: the
    regularisers' mask keywords (None entries allowed)."""
    masks = {k: m for k, m in (masks or {}).items() if m is not None}
    inputs = (gx, h0, c0, w_hh, b_hh, w_hr)
    wrt = [t for t in inputs if t is not None and t.requires_grad]
    with torch.enable_grad():
        outs = reference.recurrence(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, w_hr, **masks)
    pairs = [(o, g) for o, g in zip(outs, grads) if g is not None]
    got = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], create_graph=True,
                                   allow_unused=True) if wrt and pairs else ())
    return tuple(next(got) if t is not None and t.requires_grad else None for t in inputs)
