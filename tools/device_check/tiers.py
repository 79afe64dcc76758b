"""The kernel families the device check exercises one by one (smoke stage, and the
compute-sanitizer runs beside the tests): every backend x every layout/tier it can be
forced into x every cell. One line per tier; a new tier a backend adds is one more line.

Each tier names how it is forced: environment variables (read by the backend, e.g.
FUSEDRNN_CUDA_MODE) and/or overrides of the Triton backend's TUNING table. `expect` is
checked against what the backend itself reports for the call (`fusedrnn.ops.cuda.plan`,
`fusedrnn.ops.triton.config.choose`), so a knob that stopped forcing its tier shows up.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tier:
    backend: str                                   # "cuda" | "triton" | "reference"
    name: str                                      # label in the report
    env: dict = field(default_factory=dict)        # environment knobs that force the tier
    tuning: dict = field(default_factory=dict)     # fusedrnn.ops.triton.config.TUNING overrides
    expect: dict = field(default_factory=dict)     # keys/values the backend's own plan must show
    dtypes: tuple = ("fp32", "bf16", "fp16")
    shape: tuple = (5, 3, 37)                      # T, B, H: tiny, odd H, several blocks
    gpu_only: bool = False                         # cannot run in the Triton interpreter
    rehearse_only: bool = False                    # only in --rehearse (a CPU stand-in)


#: the knobs of tests/gpu/sanitizer_case.py (T=5, B=19, H=37: 3 CTAs of 16 units, 3 batch groups)
_CUDA_SHAPE = (5, 19, 37)
_CUDA = dict(FUSEDRNN_CUDA_UNITS="16", FUSEDRNN_CUDA_BATCH_ROWS="8")

TIERS = (
    Tier("cuda", "cta", env={"FUSEDRNN_CUDA_MODE": "cta", "FUSEDRNN_CUDA_BATCH_ROWS": "8"},
         expect={"tier": "cta"}, shape=_CUDA_SHAPE, gpu_only=True),
    Tier("cuda", "cluster", env={"FUSEDRNN_CUDA_MODE": "cluster", **_CUDA}, expect={"tier": "cluster"},
         shape=_CUDA_SHAPE, gpu_only=True),
    Tier("cuda", "grid", env={"FUSEDRNN_CUDA_MODE": "grid", **_CUDA}, expect={"tier": "grid"},
         shape=_CUDA_SHAPE, gpu_only=True),
    Tier("cuda", "grid-passes", env={"FUSEDRNN_CUDA_MODE": "grid", "FUSEDRNN_CUDA_PASSES": "2", **_CUDA},
         expect={"tier": "grid"}, shape=_CUDA_SHAPE, gpu_only=True),
    Tier("cuda", "step", env={"FUSEDRNN_CUDA_MODE": "step"}, expect={"tier": "step"}, shape=_CUDA_SHAPE,
         gpu_only=True),
    # H=29: the cta layout holds all of W_hh in one program, which at H=37 no longer fits LSTM/GRU
    Tier("triton", "cta", env={"FUSEDRNN_TRITON_LAYOUT": "cta"}, expect={"layout": "cta"}, shape=(5, 3, 29)),
    Tier("triton", "grid", env={"FUSEDRNN_TRITON_LAYOUT": "grid"}, expect={"layout": "grid"}, gpu_only=True),
    Tier("triton", "solo", env={"FUSEDRNN_TRITON_LAYOUT": "solo"}, expect={"layout": "solo"}),
    Tier("reference", "loop", dtypes=("fp32",), rehearse_only=True),
)

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def selected(rehearse: bool) -> list[Tier]:
    return [t for t in TIERS if rehearse or not t.rehearse_only]


def kernel_ids(rehearse: bool) -> list[str]:
    """backend/tier/cell for every kernel to exercise, cell-major: a run cut short (memcheck
    beside the tests) has still covered every tier of the first cells."""
    return [f"{t.backend}/{t.name}/{c}" for c in CELLS for t in selected(rehearse)]


def find(kernel_id: str) -> tuple[Tier, str]:
    backend, name, cell = kernel_id.split("/")
    for t in TIERS:
        if (t.backend, t.name) == (backend, name) and cell in CELLS:
            return t, cell
    raise KeyError(f"unknown kernel {kernel_id!r}; known: {', '.join(kernel_ids(False) + kernel_ids(True))}")
