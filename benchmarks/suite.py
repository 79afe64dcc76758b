"""The suite's executor: for each case and dtype, build every provider's module from the
same master weights, check each against the float64 oracle, then time those that passed,
interleaved. One row per case, dtype, mode and provider."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch

from . import accuracy, anchors, cudnn_algo, model_cases, providers, stats, workload
from .shapes import Case
from .timing import bench_interleaved


@dataclass
class Settings:
    device: torch.device
    dtypes: list[str]
    modes: list[str]
    providers: list[providers.Provider]
    warmup: int = 3
    reps: int = 20
    eager_max_t: int = 256
    time_limit_s: float | None = None
    seed: int = 0
    baseline: str = "cudnn"
    baseline_fp16: str | None = "cudnn-fp16"
    started: float = field(default_factory=time.monotonic)

    def out_of_time(self) -> bool:
        return self.time_limit_s is not None and time.monotonic() - self.started > self.time_limit_s


#: a variant case's torch.nn rows (torch.nn computes the standard cell of the same shape)
STANDARD_CELL_NOTE = "torch.nn's standard cell of this shape (it has no such variant): timed as the cost to beat, not checked"


def _row(case: Case, dtype: str, mode: str, provider: providers.Provider, **fields) -> dict:
    row = {"section": case.section, "case": case.label, "cell": case.cell, "B": case.B, "T": case.T,
           "H": case.H, "I": case.I, "layers": case.layers, "bidirectional": case.bidirectional,
           "packed": case.packed, "decode": case.decode, "api": case.api if case.decode else None,
           "graph": case.graph, "dtype": dtype, "mode": mode,
           "provider": provider.name, "provider_dtype": provider.dtype_for(dtype),
           "status": "ok", "note": "", "max_rel_err": None, "tol": None,
           "median_ms": None, "min_ms": None, "max_ms": None, "n": 0, "p25_ms": None, "p75_ms": None,
           "iqr_pct": None, "cudnn_algo": None, "kernels": None, "tf32": None,
           "tokens": model_cases.tokens(case), "tokens_per_s": None,
           "anchor_ms": anchors.anchor_ms(case, dtype, mode), "best_anchor_ms": anchors.best_anchor_ms(case, mode)}
    row.update(fields)
    return row


def _short(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:300]


def _cudnn_facts(case: Case, dtype: str, mode: str, module, oracle, device, observe: bool) -> dict:
    """For a torch.nn row on a GPU: cuDNN's algorithm by PyTorch's rule, (fp32) whether cuDNN
    may use TF32 (its default), and, when `observe`, the kernels one profiled call launched
    (one extra call, so only for the forward of the run-dtype baseline at layer shapes)."""
    if device.type != "cuda":
        return {}
    props = torch.cuda.get_device_properties(device)
    if case.decode and case.api == "cells":  # torch.nn's cells: two GEMMs and a pointwise kernel, no cuDNN
        return {"cudnn_algo": "none (torch.nn cells)"}
    facts = {"cudnn_algo": cudnn_algo.expected(case, dtype, mode, (props.major, props.minor), props.multi_processor_count)}
    if dtype == "fp32":
        facts["tf32"] = bool(torch.backends.cudnn.allow_tf32)
    if observe:
        args = workload.materialize(case, {k: v.to(oracle.device) for k, v in oracle.base.items()},
                                    providers.TORCH_DTYPES[dtype])
        facts["kernels"] = cudnn_algo.observe(lambda: workload.call(case, module, args, mode))
    return facts


def run_case(case: Case, settings: Settings, timer, timed: bool = True, on_item=None) -> list[dict]:
    """All rows of one case: every dtype x mode x provider."""
    modes = case.modes(settings.modes)
    master = providers.master_module(case, settings.seed)
    state_dict = master.state_dict()
    gen = torch.Generator(device=settings.device).manual_seed(settings.seed + 1)
    oracle = accuracy.Oracle(case, state_dict, workload.draw(case, settings.device, gen), settings.device)
    rows: list[dict] = []
    for dtype in settings.dtypes:
        if settings.out_of_time():
            rows += [_row(case, dtype, m, p, status="skipped", note="time limit reached")
                     for m in modes for p in settings.providers]
            for _ in modes:
                on_item and on_item()
            continue
        rows += _run_dtype(case, dtype, modes, settings, timer, timed, oracle, state_dict, on_item)
    return rows


def _run_dtype(case, dtype, modes, settings, timer, timed, oracle, state_dict, on_item) -> list[dict]:
    rows = []
    modules: dict[str, torch.nn.Module] = {}
    fixed: dict[str, dict[str, dict]] = {}   # provider -> mode -> row, for providers that cannot run
    order = [p.name for p in settings.providers]
    active = []
    for p in settings.providers:
        if p.fixed_dtype is not None and p.fixed_dtype == dtype:
            continue  # cudnn-fp16 in an fp16 run is the cudnn row itself
        pdtype = p.dtype_for(dtype)
        try:
            reason = providers.why_not(p, case, pdtype, settings.device, settings.eager_max_t)
            if reason is None:
                modules[p.name] = providers.build(p, case, state_dict, pdtype, settings.device)
        except Exception as e:  # noqa: BLE001 - reported in the table
            reason = "could not build: " + _short(e)
        if reason is not None:
            status = "unsupported" if not reason.startswith("could not build") else "error"
            fixed[p.name] = {m: _row(case, dtype, m, p, status=status, note=reason) for m in modes}
        else:
            active.append(p)
    active.sort(key=lambda p: not p.baseline)  # baselines' errors set the others' tolerance
    for mode in modes:
        mode_rows = {name: by_mode[mode] for name, by_mode in fixed.items()}
        if settings.out_of_time():
            mode_rows.update({p.name: _row(case, dtype, mode, p, status="skipped", note="time limit reached")
                              for p in active})
            rows += sorted(mode_rows.values(), key=lambda r: order.index(r["provider"]))
            on_item and on_item()
            continue
        baseline_err = None
        for p in active:
            pdtype = p.dtype_for(dtype)
            if p.baseline and case.options:
                mode_rows[p.name] = _row(case, dtype, mode, p, note=STANDARD_CELL_NOTE)
                continue
            try:
                err = oracle.error_of(modules[p.name], pdtype, mode)
            except Exception as e:  # noqa: BLE001
                mode_rows[p.name] = _row(case, dtype, mode, p, status="error", note="check failed: " + _short(e))
                continue
            if p.name == settings.baseline:
                baseline_err = err
            if p.baseline:
                observe = p.name == settings.baseline and mode == "fw" and case.section == "layer"
                mode_rows[p.name] = _row(case, dtype, mode, p, max_rel_err=err, **_cudnn_facts(
                    case, pdtype, mode, modules[p.name], oracle, settings.device, observe))
                continue
            tol = accuracy.tolerance(pdtype, baseline_err if pdtype == dtype else None)
            ok = math.isfinite(err) and err <= tol
            mode_rows[p.name] = _row(case, dtype, mode, p, max_rel_err=err, tol=tol,
                                     status="ok" if ok else "WRONG",
                                     note="" if ok else f"max rel err {err:.2e} > tol {tol:.1e}: not timed")
        to_time = {}
        for p in active:
            row = mode_rows[p.name]
            if row["status"] != "ok":
                continue
            if not timed or (settings.device.type == "cpu" and not p.timed_on_cpu):
                if row["note"] == STANDARD_CELL_NOTE:
                    row["note"] = "not timed; " + STANDARD_CELL_NOTE
                    continue
                row["note"] = "checked, not timed" + (" (Triton interpreter)" if p.backend == "triton" else "")
                continue
            to_time[p.name] = workload.CaseRunner(case, modules[p.name], mode,
                                                  providers.TORCH_DTYPES[p.dtype_for(dtype)], settings.device)
        if to_time:
            times, errors = bench_interleaved(to_time, timer, settings.warmup, settings.reps,
                                              divide_by=case.T if case.decode else 1)
            for name, reason in errors.items():
                mode_rows[name].update(status="error", note=reason)
            for name, ts in times.items():
                s = stats.summarize(ts)
                mode_rows[name].update(s, tokens_per_s=stats.tokens_per_s(mode_rows[name]["tokens"], s["median_ms"]))
        rows += sorted(mode_rows.values(), key=lambda r: order.index(r["provider"]))
        on_item and on_item()
    del modules
    if settings.device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def count_items(plan, settings: Settings) -> int:
    return sum(len(case.modes(settings.modes)) * len(settings.dtypes) for case, *_ in plan)


def run_all(plan, settings: Settings, timer, on_item=None, on_case=None, on_progress=None) -> list[dict]:
    """plan: list of (case, timed, providers or None for settings.providers).
    on_case(all rows so far) and on_progress(case, dtype, its rows) after every case.
    Returns all rows with speedups attached (GPU timings only)."""
    rows: list[dict] = []
    low = next((p.fixed_dtype for p in settings.providers if p.name == settings.baseline_fp16), None) or "fp16"
    for dtype in settings.dtypes:  # dtype outermost: a time limit cuts whole dtypes, not shapes
        for case, timed, provs in plan:
            case_settings = dataclasses.replace(settings, dtypes=[dtype],
                                                providers=settings.providers if provs is None else list(provs))
            before = len(rows)
            rows += run_case(case, case_settings, timer, timed, on_item)
            new = rows[before:]
            # CPU timings are not representative: they are shown with their spread, never as speedups
            stats.attach_speedups(rows, settings.baseline, settings.baseline_fp16, low,
                                  comparable=settings.device.type == "cuda")
            if on_case:
                on_case(rows)
            if on_progress:
                on_progress(case, dtype, new)
    return rows
