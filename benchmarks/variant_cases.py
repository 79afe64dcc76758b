"""The "variant" section: cells fusedrnn computes and torch.nn does not, at one anchor shape.

torch.nn has no such module, so the baseline rows (cuDNN) run the standard cell of the same
shape: they are the cost to beat, timed but not checked (they compute another formula). The
fused rows are checked against fusedrnn's reference backend in float64 on the same weights
(accuracy.Oracle), at the dtype's tolerance floor.

- gru reset_after=False: the GRU with its reset gate applied to h before the recurrent
  product (the original GRU's formula; docs/design.md "Which GRU").
- lstm zoneout (h and c) and lstm recurrent_dropout: the regularisers, in training mode (the
  modules are built in training mode), so each call draws its masks. The check seeds torch's
  generators before the oracle's call and before each provider's (accuracy.check_outputs):
  the masks are drawn in float32 on the device whatever the dtype (fusedrnn/regularisers.py),
  so the float64 oracle sees the same masks as the provider it judges.
- gru reset_after=False with zoneout and recurrent_dropout: both at once (the kernels' two
  phases per step with the masks).
"""
from __future__ import annotations

from .shapes import Case

#: the anchor shape the variants are timed at (docs/anchors.md): B, T, H
VARIANT_SHAPE = (16, 1024, 768)
#: (cell, fusedrnn keyword arguments) of each variant
VARIANTS = (("gru", (("reset_after", False),)),
            ("lstm", (("zoneout", 0.1), ("zoneout_cell", 0.05))),
            ("lstm", (("recurrent_dropout", 0.25),)),
            ("gru", (("reset_after", False), ("zoneout", 0.1), ("recurrent_dropout", 0.25))))
#: the seed of the masks a checked call draws (the same for the oracle and every provider)
MASK_SEED = 1234


def variant_cases(shape=VARIANT_SHAPE) -> list[Case]:
    B, T, H = shape
    return [Case("variant", cell, cell, B, T, H, H, options=options) for cell, options in VARIANTS]


def cpu_variant_cases() -> list[Case]:
    """Tiny versions for the CPU correctness default (checked, not timed)."""
    return variant_cases((3, 5, 8))
