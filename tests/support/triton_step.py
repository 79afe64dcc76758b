"""Arguments for the fused decode step and its float64 reference."""
import torch

from fusedrnn.ops import cell_step
from fusedrnn.ops.common import GATES

from support.triton_recurrence import DEVICE


def step_args(cell, B, I, H, dtype, bias=True, seed=0, device=DEVICE):
    """x, h0, c0, w_ih, w_hh, b_ih, b_hh in `dtype` (c0 None but for the LSTM; biases None without bias)."""
    g = torch.Generator().manual_seed(seed)
    GH = GATES[cell] * H

    def t(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)
    return (t(B, I), t(B, H), t(B, H) if cell == "lstm" else None, t(GH, I, scale=max(I, 1) ** -0.5),
            t(GH, H, scale=H ** -0.5), t(GH) if bias else None, t(GH) if bias else None)


def reference_step(cell, args, dtype):
    """The reference backend's step (input GEMM + one recurrence step) with the arguments in `dtype`."""
    cast = [a.to(dtype) if a is not None else None for a in args]
    h, c = cell_step.step("reference", cell, *cast)
    return [t.double() for t in ((h, c) if c is not None else (h,))]
