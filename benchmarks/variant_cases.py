"""The "variant" section: cells fusedrnn computes and torch.nn does not, at one anchor shape.

torch.nn has no such module, so the baseline rows (cuDNN) run the standard cell of the same
shape: they are the cost to beat, timed but not checked (they compute another formula). The
fused rows are checked against fusedrnn's reference backend in float64 on the same weights
(accuracy.Oracle), at the dtype's tolerance floor.

- gru reset_after=False: the GRU with its reset gate applied to h before the recurrent
  product (the original GRU's formula; docs/design.md "Which GRU").
"""
from __future__ import annotations

from .shapes import Case

#: the anchor shape the variants are timed at (docs/anchors.md): B, T, H
VARIANT_SHAPE = (16, 1024, 768)
#: (cell, fusedrnn keyword arguments) of each variant
VARIANTS = (("gru", (("reset_after", False),)),)


def variant_cases(shape=VARIANT_SHAPE) -> list[Case]:
    B, T, H = shape
    return [Case("variant", cell, cell, B, T, H, H, options=options) for cell, options in VARIANTS]


def cpu_variant_cases() -> list[Case]:
    """Tiny versions for the CPU correctness default (checked, not timed)."""
    return variant_cases((3, 5, 8))
