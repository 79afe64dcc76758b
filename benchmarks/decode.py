"""How the decode case is called besides one module call per step: a stack of cells (the way a
captioning or character-sampling loop is written) and a step captured in a CUDA graph.

A decode "module" here has `decode(xs, state) -> (y (B, steps, H), final state)`, with xs a
list of (B, 1, I) step inputs and the state as nn.LSTM takes it (h (L,B,H), c (L,B,H));
workload.decode falls back to one call per step for a module without it.
"""
from __future__ import annotations

import torch
from torch import nn

from .shapes import Case

_CELL_CLASSES = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn_tanh": nn.RNNCell, "rnn_relu": nn.RNNCell}


class CellStack(nn.Module):
    """`layers` cells, each fed the previous one's h; the state is kept per layer between steps
    (split once before the loop, stacked once after it)."""

    def __init__(self, case: Case, make_cell):
        super().__init__()
        self.is_lstm = case.cell == "lstm"
        self.cells = nn.ModuleList([make_cell(case.I if k == 0 else case.H, case.H) for k in range(case.layers)])

    def load_from_stacked(self, state_dict) -> None:
        """Weights of torch.nn.LSTM/GRU/RNN (weight_ih_l{k}, ...) into cell k."""
        for k, cell in enumerate(self.cells):
            cell.load_state_dict({name: state_dict[f"{name}_l{k}"] for name in cell.state_dict()})

    def decode(self, xs, state):
        states = list(zip(state[0].unbind(0), state[1].unbind(0))) if self.is_lstm else list(state.unbind(0))
        ys = []
        for x_t in xs:
            inp = x_t[:, 0]
            for k, cell in enumerate(self.cells):
                states[k] = cell(inp, states[k])
                inp = states[k][0] if self.is_lstm else states[k]
            ys.append(inp)
        y = torch.stack(ys, 1)
        if self.is_lstm:
            return y, (torch.stack([s[0] for s in states]), torch.stack([s[1] for s in states]))
        return y, torch.stack(states)


def cell_stack(case: Case, make_cell=None) -> CellStack:
    """torch.nn's cells, or those `make_cell(input_size, hidden_size)` builds."""
    if make_cell is None:
        cls = _CELL_CLASSES[case.cell]
        kw = {"nonlinearity": case.cell[4:]} if case.cell.startswith("rnn_") else {}
        make_cell = lambda i, h: cls(i, h, **kw)  # noqa: E731
    return CellStack(case, make_cell)


class GraphDecode(nn.Module):
    """One decode step of `inner` (called as inner(x_t, state) or, for a CellStack, through
    its decode) captured in a CUDA graph with fusedrnn.CapturedStep, replayed per step: per
    step one input copy, one replay and one output copy (the captured output is overwritten
    by the next replay). Captured on the first call, again when shapes change."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self._captured = None

    def _step(self, x_t, state):
        if hasattr(self.inner, "decode"):
            return self.inner.decode([x_t], state)
        return self.inner(x_t, state)

    def decode(self, xs, state):
        from fusedrnn.decoding import CapturedStep  # noqa: PLC0415
        key = (tuple(xs[0].shape), xs[0].dtype, tuple(s.shape for s in _tensors(state)))
        if self._captured is None or self._captured[0] != key:
            self._captured = (key, CapturedStep(self._step, xs[0], state))
        step = self._captured[1]
        step.reset(state)
        y = xs[0].new_empty(xs[0].shape[0], len(xs), step.output.shape[-1])
        for t, x_t in enumerate(xs):
            y[:, t:t + 1].copy_(step(x_t))
        final = step.state
        return y, (tuple(s.clone() for s in final) if isinstance(final, tuple) else final.clone())


def _tensors(state):
    return state if isinstance(state, tuple) else (state,)
