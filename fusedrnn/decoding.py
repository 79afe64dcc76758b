"""A decode step captured in a CUDA graph and replayed once per token.

Autoregressive decoding calls a small network once per token, and on a GPU such a step is
almost all host overhead: Python, dispatch and one launch per kernel (~4 µs each from C++,
~16 µs for a Triton kernel launched from Python). Captured in a CUDA graph, the step's
kernels are replayed from one host call (~1.4 µs per kernel on an H100), so the time per
token approaches the GPU's own work.

    step = fusedrnn.CapturedStep(decoder, x0, (h0, c0))   # captures decoder(x, state) -> (y, state)
    for t in range(max_len):
        y = step(x)          # copies x in, replays the graph; the state is carried inside it
        x = next_input(y)    # clone y if you keep it: the next replay overwrites it

`decoder` is any callable `step(x, state) -> (output, new_state)` made of CUDA work that a
graph can capture: a fusedrnn (or torch.nn) module called one step at a time, a function of
fusedrnn cells, an embedding, a head, even the argmax that picks the next token. The graph
runs it on static tensors: the input `x`, the state (copied from the one given, and
overwritten with the new state at the end of every replay) and the output. Capturing runs
the step a few times first on a side stream, as torch requires (lazy initialisation, cuBLAS
workspaces and Triton compilation must not happen during a capture), under `no_grad`.
"""
from __future__ import annotations

import torch

from .ops import timeouts


def _tensors(state) -> tuple:
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def _copy_into(dest, src) -> None:
    for d, s in zip(_tensors(dest), _tensors(src), strict=True):
        d.copy_(s)


def _clone(state):
    return tuple(t.clone() for t in state) if isinstance(state, (tuple, list)) else state.clone()


class CapturedStep:
    """`step(x, state) -> (output, new_state)` captured once in a CUDA graph.

    Args:
        step: the decode step; called with the static input and state while capturing.
        x: an example input: its shape, dtype and device hold for every later call.
        state: the initial state (a tensor or a tuple of tensors, e.g. nn.LSTM's (h, c)).
        warmup: untimed calls on a side stream before the capture.

    Attributes: `output` and `state` are the graph's static tensors (the output of the last
    replay, the state after it); `reset(state)` copies a new state in (a new sequence).
    Replays are not checked for kernel timeouts (that would synchronise every step):
    `check_timeouts()` does it for the latest replay.
    """

    def __init__(self, step, x: torch.Tensor, state, warmup: int = 3):
        if not isinstance(x, torch.Tensor) or x.device.type != "cuda":
            raise ValueError("CapturedStep captures CUDA work: x must be a CUDA tensor "
                             f"(got {x.device if isinstance(x, torch.Tensor) else type(x).__name__}); "
                             "on the CPU, call the step itself")
        self.input = x.clone()
        self.state = _clone(state)
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(warmup):
                step(self.input, _clone(self.state))  # leaves the static state as it is
        torch.cuda.current_stream(x.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self._timeouts = timeouts.watch()  # keeps the captured launches' error reports for check_timeouts
        with torch.no_grad(), self._timeouts, torch.cuda.graph(self.graph):
            self.output, new_state = step(self.input, self.state)
            _copy_into(self.state, new_state)  # the carried state: read at the start, written at the end

    def reset(self, state) -> None:
        """Start from `state` at the next call (a new sequence)."""
        _copy_into(self.state, state)

    def check_timeouts(self) -> None:
        """Synchronise, then raise RuntimeError if a kernel of the latest replay timed out."""
        self._timeouts.check()

    def __call__(self, x: torch.Tensor):
        """One step: `x` copied into the static input, one replay; returns the static output."""
        self.input.copy_(x)
        self.graph.replay()
        return self.output
