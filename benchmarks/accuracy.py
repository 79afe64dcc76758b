"""Correctness before timing: every provider is compared with torch.nn run in float64 on
the same (dtype-rounded) weights and inputs; fused providers must be within tolerance. A
variant case (benchmarks/variant_cases.py) is compared with fusedrnn's reference backend in
float64 instead, and its torch.nn rows, which run the standard cell, are not checked.

Error measure: over the outputs compared (y, final states; for fwbw also every parameter's
gradient), the largest  max|out - ref| / max|ref|.
Tolerance for a provider in dtype d:  max(TOL_FLOOR[d], 2 x the error of torch.nn (cuDNN)
run in d on the same case) — the project's rule "no worse than twice the error of torch.nn
in the same dtype", with a floor so that a near-exact baseline does not demand more than
the dtype can give (fused kernels may use tf32 for fp32).
"""
from __future__ import annotations

import math

import torch

from . import providers, variant_cases, workload
from .shapes import Case

TOL_FLOOR = {"fp32": 5e-3, "bf16": 5e-2, "fp16": 1e-2}


def max_rel_err(outs, refs) -> float:
    """max over pairs of max|a - b| / max|b| (inf on a shape mismatch or a NaN)."""
    worst = 0.0
    for a, b in zip(outs, refs, strict=True):
        if a is None or b is None:
            if a is not b:
                return math.inf
            continue
        if a.shape != b.shape:
            return math.inf
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        if a.numel() == 0:
            continue
        err = (a - b).abs().max().item()
        scale = b.abs().max().item()
        rel = err / scale if scale > 0 else err
        if math.isnan(rel):
            return math.inf
        worst = max(worst, rel)
    return worst


def tolerance(dtype: str, baseline_err: float | None) -> float:
    floor = TOL_FLOOR[dtype]
    if baseline_err is None or not math.isfinite(baseline_err):
        return floor
    return max(floor, 2.0 * baseline_err)


def check_outputs(case: Case, module, args, mode: str) -> list[torch.Tensor]:
    """What a call is judged by: outputs and states, plus parameter gradients for fwbw."""
    if mode == "fwbw":
        module.zero_grad(set_to_none=True)
    if case.options:  # a variant with masks draws them: the same ones for the oracle and every provider
        torch.manual_seed(variant_cases.MASK_SEED)
    outs = [o.detach() for o in workload.call(case, module, args, mode)]
    if mode == "fwbw":
        outs += [p.grad for p in module.parameters()]
    return outs


def reference_module(case: Case) -> torch.nn.Module:
    """The oracle's module: torch.nn, or for a variant (which torch.nn lacks) fusedrnn's
    reference backend, a plain PyTorch loop of the variant's formula."""
    if not case.options:
        return providers.torch_class(case.cell)(**providers._ctor_kwargs(case))
    return providers.fused_class(case.cell)(**providers._ctor_kwargs(case), **dict(case.options), backend="reference")


class Oracle:
    """torch.nn in float64 on the check inputs, per weight rounding (dtype); cached.
    Runs on the benchmark device (cuDNN supports double) and falls back to the CPU."""

    def __init__(self, case: Case, state_dict, base_inputs: dict, device: torch.device):
        self.case, self.state_dict, self.base, self.device = case, state_dict, base_inputs, device
        self._cache: dict[tuple, list[torch.Tensor]] = {}
        self.where = None

    def _run(self, dtype: str, mode: str, device: torch.device):
        low = providers.TORCH_DTYPES[dtype]
        module = reference_module(self.case)
        module.load_state_dict(self.state_dict)
        module.to(low).to(device=device, dtype=torch.float64)      # round weights to dtype first
        base = {k: v.to(device).to(low) for k, v in self.base.items()}
        args = workload.materialize(self.case, base, torch.float64)
        return [t.cpu() if t is not None else None for t in check_outputs(self.case, module, args, mode)]

    def outputs(self, dtype: str, mode: str) -> list[torch.Tensor]:
        key = (dtype, mode)
        if key not in self._cache:
            try:
                self._cache[key] = self._run(dtype, mode, self.device)
                self.where = f"torch.nn float64 on {self.device.type}"
            except Exception:  # noqa: BLE001 - no float64 RNN on this device: the CPU has one
                self._cache[key] = self._run(dtype, mode, torch.device("cpu"))
                self.where = "torch.nn float64 on cpu"
        return self._cache[key]

    def error_of(self, module, dtype: str, mode: str) -> float:
        """max_rel_err of `module` (already in dtype) on the check inputs against the oracle."""
        args = workload.materialize(self.case, {k: v.to(self.device) for k, v in self.base.items()},
                                    providers.TORCH_DTYPES[dtype])
        return max_rel_err(check_outputs(self.case, module, args, mode), self.outputs(dtype, mode))
