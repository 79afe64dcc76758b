"""Which (cell, dtype, B, H) the gate checks: the anchors, a sweep, or a small CI subset."""
from __future__ import annotations

from .rows import CheckCase

#: the cells both backends run, the GRU with its reset gate before the product
#: (fusedrnn.GRU(reset_after=False)) included
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu", "gru_reset_before")
#: cells only the Triton kernels run (the CUDA rows leave them out): none since the CUDA kernels
#: run the reset-before GRU (csrc/passes_reset.cuh)
TRITON_ONLY_CELLS: tuple = ()
DTYPES = ("bf16", "fp16", "fp32")
# (B, H) of the five anchor shapes (T never changes what is launched)
ANCHORS = ((1, 256), (8, 128), (16, 768), (64, 1024), (256, 512))
SWEEP_B = (1, 3, 8, 16, 64, 256, 1024, 4096)
SWEEP_H = (1, 33, 128, 256, 512, 768, 1000, 1024, 2048)
# a few sweep points that exercise the edges (tiny/odd H, huge batch, huge H) for CI
CI_EXTRA = ((3, 33), (4096, 1024), (1, 2048), (1024, 1000))


def shape_set(name: str) -> list[tuple[int, int, bool]]:
    """(B, H, is_anchor) for the named set: anchors, sweep, ci (anchors + a few edges), all."""
    anchors = [(b, h, True) for b, h in ANCHORS]
    sweep = [(b, h, False) for b in SWEEP_B for h in SWEEP_H if (b, h) not in ANCHORS]
    extra = [(b, h, False) for b, h in CI_EXTRA]
    sets = {"anchors": anchors, "sweep": sweep, "ci": anchors + extra, "all": anchors + sweep}
    if name not in sets:
        raise ValueError(f"unknown shape set {name!r} (choose from {', '.join(sets)})")
    return sets[name]


def make_cases(shapes: str, cells, dtypes, sample: bool = False) -> list[CheckCase]:
    """Every (shape, cell, dtype); with `sample`, one (cell, dtype) per shape, both rotating,
    so that each shape, cell and dtype is still compiled (the default test run's gate)."""
    if sample:
        return [CheckCase(cells[i % len(cells)], dtypes[i % len(dtypes)], b, h, anchor)
                for i, (b, h, anchor) in enumerate(shape_set(shapes))]
    return [CheckCase(cell, dtype, b, h, anchor) for (b, h, anchor) in shape_set(shapes)
            for cell in cells for dtype in dtypes]
