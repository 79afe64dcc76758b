"""What a fusedrnn module runs while torch.onnx.export traces it.

ONNX has no fusedrnn::rnn_layer_forward: a kernel backend's custom op cannot be translated,
so under ONNX export every backend but "reference" runs its torch.nn twin, which the
exporter writes as the standard ONNX LSTM / GRU / RNN operator (cells as Gemm and
activations) — the same function, and the graph stays valid for any sequence length and
batch. Two exceptions keep the exported model correct: an LSTM with `proj_size` runs the
reference backend, because torch 2.13 writes torch.nn's projected LSTM as a graph that
onnxruntime refuses to load ("All inputs to Concat must have same rank"), and an explicit
"reference" stays itself. The reference backend is a Python loop over time steps, so its
graph is plain ONNX ops unrolled for the traced sequence length and batch (fixed shapes).
"""
from __future__ import annotations

import sys

from .ops.common import GRU_RESET_BEFORE
import torch


def exporting() -> bool:
    """True while torch.onnx.export traces (either exporter). Reads nothing, and imports
    nothing, until torch.onnx has been imported: a forward pays no import for it. Both
    exporters trace (torch.jit's tracer, or torch.export's dynamo or fake tensors), so a call
    that is not being traced or compiled skips torch's own check (two imports per call)."""
    onnx = sys.modules.get("torch.onnx")
    # torch.compiler.is_compiling() is also True while torch.export traces
    if onnx is None or not (torch._C._is_tracing() or torch.compiler.is_compiling()):
        return False
    return onnx.is_in_onnx_export()


def backend_for_export(name: str, cell: str, proj_size: int, regularised: bool = False) -> tuple[str, str]:
    """(backend, reason) for a call traced by torch.onnx.export that would run `name`;
    `regularised`: zoneout or recurrent dropout, which only the reference exports."""
    if name == "reference":
        return name, "ONNX export: the reference backend exports its own loop (standard ops, fixed shapes)"
    if regularised:
        return "reference", ("ONNX export with zoneout (or recurrent dropout in training) runs the reference "
                             "backend (standard ops, fixed shapes): the ONNX RNN operators have neither")
    if cell == GRU_RESET_BEFORE:
        return "reference", ("ONNX export of a GRU with reset_after=False runs the reference backend (standard ops, "
                             "fixed shapes): torch.nn's GRU, which exports as the ONNX GRU operator, computes the "
                             "reset gate after the recurrent product")
    if cell == "lstm" and proj_size > 0:
        return "reference", ("ONNX export of an LSTM with proj_size runs the reference backend (standard ops, "
                             "fixed shapes): torch's export of torch.nn's projected LSTM does not load in onnxruntime")
    return "torch", ("ONNX export runs torch.nn's twin, exported as the standard ONNX RNN operators "
                     f"(ONNX has no fusedrnn kernels; backend {name!r} computes the same function)")
