"""Small models holding one fusedrnn module each, for the export tests (torch.export, ONNX),
and the check of an exported model's outputs against torch.nn run in float64."""
from __future__ import annotations

import copy

import torch
from torch import nn

from support.parity import CELL_TWINS, TWINS, flat_outputs, max_err

#: name -> (cell, is_cell_module, constructor kwargs); awkward sizes: odd H, batch 3
CASES = {
    "lstm_2layer_bidir": ("lstm", False, dict(num_layers=2, bidirectional=True)),
    "lstm_proj": ("lstm", False, dict(proj_size=2)),
    "gru_batch_first": ("gru", False, dict(batch_first=True)),
    "rnn_relu_no_bias": ("rnn_relu", False, dict(bias=False)),
    "lstm_cell": ("lstm", True, {}),
    "gru_cell": ("gru", True, {}),
}
INPUT, HIDDEN = 3, 5


class Wrapped(nn.Module):
    """Returns every output of the module as a flat tuple (y, h_n[, c_n]) or (h[, c])."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return tuple(flat_outputs(self.rnn(x)))


def make(case: str, backend: str, seed: int = 0):
    """(model holding the fusedrnn module, its torch.nn twin with the same parameters), float32."""
    cell, is_cell, kw = CASES[case]
    kw = dict(kw)
    if cell.startswith("rnn"):
        kw["nonlinearity"] = cell.split("_")[1]
    ours_cls, torch_cls = (CELL_TWINS if is_cell else TWINS)[cell]
    torch.manual_seed(seed)
    ours = ours_cls(INPUT, HIDDEN, backend=backend, **kw)
    twin = torch_cls(INPUT, HIDDEN, **kw)
    twin.load_state_dict(ours.state_dict())
    return Wrapped(ours).eval(), Wrapped(twin).eval()


def example_input(case: str, steps: int = 4, batch: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    _, is_cell, kw = CASES[case]
    shape = (batch, INPUT) if is_cell else (batch, steps, INPUT) if kw.get("batch_first") else (steps, batch, INPUT)
    return torch.randn(*shape, generator=g)


def assert_matches_torch(got, twin: nn.Module, x: torch.Tensor) -> None:
    """`got` (the exported model's outputs on float32 `x`) is no further from torch.nn in
    float64 than twice torch.nn's own float32 error (plus a few float32 ulps)."""
    with torch.no_grad():
        truth = copy.deepcopy(twin).double()(x.double())
        torch_out = twin(x)
    got = [torch.as_tensor(g) for g in got]
    assert [tuple(g.shape) for g in got] == [tuple(t.shape) for t in truth]
    err, err_torch = max_err(got, truth), max_err(torch_out, truth)
    assert err <= 2 * err_torch + 1e-6, (err, err_torch)
