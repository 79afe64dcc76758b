"""The two model-level cases (cuDNN's published numbers for them: docs/anchors.md).

- encoder: a 2-layer bidirectional LSTM, B=32, T=512, I=256, H=512, once padded and once
  packed (lengths uniform in 256..512, drawn once per run from a fixed seed; the
  PackedSequence is built outside the timed region); fw and fwbw.
- decode: a 2-layer LSTM run one step at a time with its state carried (no_grad),
  H=1024 B=1 and H=512 B=8; a timed call runs DECODE_STEPS steps and the time is
  reported per step. Four ways of calling it (benchmarks/decode.py): the module with T=1
  (as the published cuDNN number was measured) or a stack of two cells, each eager or with
  the step captured in a CUDA graph (fusedrnn.CapturedStep) and replayed per step.
"""
from __future__ import annotations

import torch

from .shapes import Case

DECODE_STEPS = 32


def encoder_cases(B: int = 32, T: int = 512, I: int = 256, H: int = 512, min_len: int = 256) -> list[Case]:
    common = dict(section="model", cell="lstm", B=B, T=T, H=H, I=I, layers=2, bidirectional=True)
    return [Case(name="encoder-padded", **common),
            Case(name="encoder-packed", packed=True, min_len=min_len, **common)]


#: (api, graph) of the decode variants
DECODE_VARIANTS = (("module", False), ("cells", False), ("module", True), ("cells", True))


def decode_cases(sizes=((1, 1024), (8, 512)), steps: int = DECODE_STEPS, variants=DECODE_VARIANTS) -> list[Case]:
    return [Case("model", "decode", "lstm", B, steps, H, H, layers=2, decode=True, api=api, graph=graph)
            for B, H in sizes for api, graph in variants]


def model_cases(which=("encoder", "decode")) -> list[Case]:
    out = []
    if "encoder" in which:
        out += encoder_cases()
    if "decode" in which:
        out += decode_cases()
    return out


def cpu_model_cases() -> list[Case]:
    """Tiny versions of the same code paths for the CPU correctness default."""
    eager = [v for v in DECODE_VARIANTS if not v[1]]  # capturing a graph needs a GPU
    return encoder_cases(B=3, T=6, I=8, H=8, min_len=2) + decode_cases(sizes=((2, 8),), steps=4, variants=eager)


def lengths(case: Case) -> torch.Tensor:
    """Sequence lengths of a packed case (CPU int64, as pack_padded_sequence wants);
    deterministic per case so every provider and every repetition sees the same batch."""
    g = torch.Generator().manual_seed(1000 + case.B * 7 + case.T)
    return torch.randint(case.min_len, case.T + 1, (case.B,), generator=g)


def tokens(case: Case) -> int:
    """Tokens processed by one timed call (per step for decoding): B*T, or the sum of the
    lengths for a packed batch."""
    if case.decode:
        return case.B
    if case.packed:
        return int(lengths(case).sum())
    return case.B * case.T
