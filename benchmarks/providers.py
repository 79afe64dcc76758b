"""Who is timed: each provider builds a module for a case from the same master weights.

    cudnn            torch.nn in the run's dtype (cuDNN on a GPU): the baseline
    cudnn-fp16       torch.nn in fp16, where cuDNN's persistent kernels apply
    fusedrnn-cuda    fusedrnn.LSTM/GRU/RNN(..., backend="cuda")
    fusedrnn-triton  fusedrnn.LSTM/GRU/RNN(..., backend="triton")
    fusedrnn-reference  backend="reference" (the plain-PyTorch oracle loop; CPU default)
  (a decode case built with api="cells" uses each provider's cells: torch.nn.LSTMCell for the
  torch.nn providers, fusedrnn.LSTMCell(backend=...) for the fused ones; a variant case's
  options reach the fused providers only: torch.nn runs its standard cell, the cost to beat)
    eager            a Python loop over nn.LSTMCell/GRUCell/RNNCell (1 layer, 1 direction)
    torch-cpu        torch.nn on the CPU: the baseline of the CPU default

fusedrnn is imported lazily, so benchmarks.run can set TRITON_INTERPRET first.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import decode
from .shapes import Case

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Provider:
    name: str
    kind: str                       # "torch" | "fused" | "eager"
    backend: str | None = None      # fusedrnn backend for kind "fused"
    fixed_dtype: str | None = None  # runs in this dtype whatever the run's dtype
    baseline: bool = False          # a torch.nn provider: reported, never marked wrong
    timed_on_cpu: bool = True       # False: checked only on the CPU (the Triton interpreter)

    def dtype_for(self, run_dtype: str) -> str:
        return self.fixed_dtype or run_dtype


PROVIDERS = {
    "cudnn": Provider("cudnn", "torch", baseline=True),
    "cudnn-fp16": Provider("cudnn-fp16", "torch", fixed_dtype="fp16", baseline=True),
    "fusedrnn-cuda": Provider("fusedrnn-cuda", "fused", backend="cuda"),
    "fusedrnn-triton": Provider("fusedrnn-triton", "fused", backend="triton", timed_on_cpu=False),
    "fusedrnn-reference": Provider("fusedrnn-reference", "fused", backend="reference"),
    "eager": Provider("eager", "eager"),
    "torch-cpu": Provider("torch-cpu", "torch", baseline=True),
}
GPU_DEFAULT = ("cudnn", "cudnn-fp16", "fusedrnn-cuda", "fusedrnn-triton")
CPU_DEFAULT = ("torch-cpu", "fusedrnn-reference", "fusedrnn-triton", "fusedrnn-cuda")


def torch_class(cell: str):
    return {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}[cell]


def _ctor_kwargs(case: Case) -> dict:
    kw = dict(input_size=case.I, hidden_size=case.H, num_layers=case.layers,
              batch_first=True, bidirectional=case.bidirectional)
    if case.cell.startswith("rnn_"):
        kw["nonlinearity"] = case.cell[4:]
    return kw


def master_module(case: Case, seed: int = 0) -> nn.Module:
    """The fp32 CPU torch.nn module whose weights every provider copies."""
    torch.manual_seed(seed)
    return torch_class(case.cell)(**_ctor_kwargs(case))


class EagerRNN(nn.Module):
    """One layer, one direction, as a Python loop over an nn.*Cell; called like nn.LSTM."""

    def __init__(self, case: Case):
        super().__init__()
        self.is_lstm = case.cell == "lstm"
        if case.cell == "lstm":
            self.cell = nn.LSTMCell(case.I, case.H)
        elif case.cell == "gru":
            self.cell = nn.GRUCell(case.I, case.H)
        else:
            self.cell = nn.RNNCell(case.I, case.H, nonlinearity=case.cell[4:])

    def load_layer0(self, state_dict) -> None:
        self.cell.load_state_dict({k: state_dict[f"{k}_l0"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})

    def forward(self, x, hx=None):                       # x (B, T, I), batch_first
        B = x.shape[0]
        h = x.new_zeros(B, self.cell.hidden_size)
        state = (h, x.new_zeros(B, self.cell.hidden_size)) if self.is_lstm else h
        ys = []
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
            ys.append(state[0] if self.is_lstm else state)
        y = torch.stack(ys, 1)
        if self.is_lstm:
            return y, (state[0].unsqueeze(0), state[1].unsqueeze(0))
        return y, state.unsqueeze(0)


def why_not(provider: Provider, case: Case, dtype: str, device: torch.device, eager_max_t: int = 0) -> str | None:
    """None if `provider` can run `case` in `dtype` on `device`, else the reason."""
    if case.graph and device.type != "cuda":
        return "capturing a CUDA graph needs a CUDA device"
    if provider.kind == "torch":
        if provider.name == "torch-cpu" and device.type != "cpu":
            return "torch-cpu is the CPU default's baseline"
        if provider.name.startswith("cudnn") and device.type != "cuda":
            return "cuDNN needs a CUDA device"
        return None
    if provider.kind == "eager":
        if case.layers != 1 or case.bidirectional or case.packed or case.decode:
            return "the eager cell loop covers 1 layer, 1 direction, padded input only"
        if eager_max_t and case.T > eager_max_t:
            return f"T={case.T} > --eager-max-t {eager_max_t} (slow; raise the limit to time it)"
        return None
    from fusedrnn import backends  # noqa: PLC0415  (after TRITON_INTERPRET is settled)
    return backends.why_not(provider.backend, device, kernel_cell(case), TORCH_DTYPES[dtype], case.H, 0,
                            regularised=is_regularised(case))


def is_regularised(case: Case) -> bool:
    """Whether `case`'s module carries zoneout or recurrent-dropout masks (a backend may decline them)."""
    from fusedrnn import regularisers  # noqa: PLC0415  (after TRITON_INTERPRET is settled)
    return any(k in regularisers.OPTIONS and v for k, v in case.options)


def kernel_cell(case: Case) -> str:
    """The cell fusedrnn's kernels run for `case` (a variant's options may change it: a GRU
    with reset_after=False is the kernels' "gru_reset_before")."""
    if not case.options:
        return case.cell
    return fused_class(case.cell)(**_ctor_kwargs(case), **dict(case.options), device="meta").cell


def fused_class(cell: str):
    import fusedrnn  # noqa: PLC0415
    return {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn_tanh": fusedrnn.RNN, "rnn_relu": fusedrnn.RNN}[cell]


def build(provider: Provider, case: Case, state_dict, dtype: str, device: torch.device) -> nn.Module:
    """A module of this provider with the master weights, in `dtype` on `device` (a decode
    case: called as its api says, captured in a CUDA graph if it says so)."""
    if case.decode and (case.api == "cells" or case.graph):
        module = _build_decoder(provider, case, state_dict).to(device=device, dtype=TORCH_DTYPES[dtype])
        return decode.GraphDecode(module) if case.graph else module
    return _build_module(provider, case, state_dict).to(device=device, dtype=TORCH_DTYPES[dtype])


def _build_decoder(provider: Provider, case: Case, state_dict) -> nn.Module:
    if case.api == "module":
        return _build_module(provider, case, state_dict)
    if provider.kind == "torch":
        stack = decode.cell_stack(case)
    else:
        import fusedrnn  # noqa: PLC0415
        cls = {"lstm": fusedrnn.LSTMCell, "gru": fusedrnn.GRUCell}.get(case.cell, fusedrnn.RNNCell)
        kw = {"nonlinearity": case.cell[4:]} if case.cell.startswith("rnn_") else {}
        stack = decode.cell_stack(case, lambda i, h: cls(i, h, backend=provider.backend, **kw))
    stack.load_from_stacked(state_dict)
    return stack


def _build_module(provider: Provider, case: Case, state_dict) -> nn.Module:
    # torch.nn has no variant: its rows run the standard cell of the case's shape (the cost to beat)
    if provider.kind == "torch":
        module = torch_class(case.cell)(**_ctor_kwargs(case))
        module.load_state_dict(state_dict)
    elif provider.kind == "eager":
        module = EagerRNN(case)
        module.load_layer0(state_dict)
    else:
        module = fused_class(case.cell)(**_ctor_kwargs(case), **dict(case.options), backend=provider.backend)
        module.load_state_dict(state_dict)
    return module
