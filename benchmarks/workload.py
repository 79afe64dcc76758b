"""How a case is called: its inputs, one call in fw or fwbw mode, and what a call returns
for the correctness check. The same code serves every provider."""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from . import model_cases
from .shapes import Case


def draw(case: Case, device: torch.device, generator: torch.Generator | None = None) -> dict:
    """Fresh fp32 random inputs (standard normal) for one call of `case`."""
    def randn(*shape):
        return torch.randn(*shape, device=device, generator=generator)
    if case.decode:
        D = 2 if case.bidirectional else 1
        out = {"x": randn(case.T, case.B, 1, case.I), "h": 0.5 * randn(case.layers * D, case.B, case.H)}
        if case.cell == "lstm":
            out["c"] = 0.5 * randn(case.layers * D, case.B, case.H)
        return out
    return {"x": randn(case.B, case.T, case.I)}


def materialize(case: Case, base: dict, dtype: torch.dtype):
    """The call's arguments in `dtype`: a (B, T, I) tensor, a PackedSequence (packed
    outside any timed region) or, for decoding, (list of (B, 1, I) steps, initial state)."""
    if case.decode:
        xs = list(base["x"].to(dtype).unbind(0))
        h = base["h"].to(dtype)
        return xs, ((h, base["c"].to(dtype)) if "c" in base else h)
    x = base["x"].to(dtype)
    if case.packed:
        return pack_padded_sequence(x, model_cases.lengths(case), batch_first=True, enforce_sorted=False)
    return x


def forward(case: Case, module, args) -> list[torch.Tensor]:
    """One call; returns [output, final state tensors...] (decoding: all steps' outputs)."""
    if case.decode:
        y, state = decode(module, *args)
    else:
        y, state = module(args)
        if isinstance(y, PackedSequence):
            y = y.data
    return [y, *(state if isinstance(state, tuple) else (state,))]


def decode(module, xs, state):
    """All steps of a decode call: the module's own loop if it has one (a stack of cells, a
    captured graph: benchmarks/decode.py), else one module call per step, state carried."""
    if hasattr(module, "decode"):
        return module.decode(xs, state)
    ys = []
    for x_t in xs:
        y_t, state = module(x_t, state)
        ys.append(y_t)
    return torch.cat(ys, 1), state


def call(case: Case, module, args, mode: str) -> list[torch.Tensor]:
    """fw: forward under no_grad; fwbw: forward + y.sum().backward()."""
    if mode == "fw":
        with torch.no_grad():
            return forward(case, module, args)
    outs = forward(case, module, args)
    outs[0].sum().backward()
    return outs


class CaseRunner:
    """A timing runner (see timing.bench_interleaved): prepare() draws fresh inputs and drops
    the gradients, outside the timed region; run() is one call."""

    def __init__(self, case: Case, module, mode: str, dtype: torch.dtype, device: torch.device):
        self.case, self.module, self.mode, self.dtype, self.device = case, module, mode, dtype, device

    def prepare(self):
        if self.mode == "fwbw":
            self.module.zero_grad(set_to_none=True)
        return materialize(self.case, draw(self.case, self.device), self.dtype)

    def run(self, args) -> None:
        call(self.case, self.module, args, self.mode)
