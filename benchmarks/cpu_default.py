"""What the suite does without a GPU: correctness of every available fusedrnn backend
against torch.nn (float64) on tiny shapes — Triton through its CPU interpreter — and a
timing of the reference and torch.nn CPU paths on small shapes, labelled as CPU numbers."""
from __future__ import annotations

from . import model_cases, providers, variant_cases
from .shapes import CPU_CHECK_SHAPES, CPU_TIMING_SHAPES, layer_cases

NOTICE = ("No CUDA GPU: running the CPU default — correctness of every available backend against "
          "torch.nn (float64) on small shapes (Triton via TRITON_INTERPRET=1) and CPU timings of the "
          "reference and torch paths (host timer). These are CPU numbers, not GPU benchmarks.")


def plan(cells, shapes, layers: int, bidirectional: bool, cases, selected) -> list[tuple]:
    """(case, timed, providers) entries. Without --shapes: tiny check-only cases for every
    provider, then timed cases for the providers worth timing on the CPU (not the Triton
    interpreter, not the CUDA extension). With --shapes: those shapes, checked and timed."""
    timed_provs = [p for p in selected if p.timed_on_cpu and p.backend != "cuda"]
    out = []
    layer = "layer" in cases
    if layer and shapes:
        out += [(c, True, selected) for c in layer_cases(cells, shapes, layers, bidirectional)]
    elif layer:
        out += [(c, False, selected) for c in layer_cases(cells, CPU_CHECK_SHAPES, layers, bidirectional)]
    minis = [c for c in model_cases.cpu_model_cases()
             if ("decode" if c.decode else "encoder") in cases]
    out += [(c, False, selected) for c in minis]
    if "variant" in cases:
        out += [(c, False, selected) for c in variant_cases.cpu_variant_cases() if c.cell in cells]
    if layer and not shapes:
        out += [(c, True, timed_provs) for c in layer_cases(cells, CPU_TIMING_SHAPES, layers, bidirectional)]
    return out


def provider_list(names) -> list[providers.Provider]:
    names = list(names or providers.CPU_DEFAULT)
    if "torch-cpu" not in names:
        names.insert(0, "torch-cpu")
    return [providers.PROVIDERS[n] for n in names]
