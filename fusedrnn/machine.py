"""The machine model: one set of latency and throughput constants of the target GPU (an
H100 SXM by default), read by both backends' planners (the CUDA plan in csrc/plan.cpp via
the generated csrc/machine_model.h, the Triton `config.choose` via its latency model) and
by the predictions of benchmarks/NOTES.md and the compile gate's critical-path report.

A recurrence step is a chain of dependent latencies, so the model charges each one on the
step's path: every dependent global round trip (a flag poll at `flag_round_trip_us`, any
other load whose issue waits on an earlier one at `l2_latency_us`), every CTA / cluster
barrier, the dependent tensor-core chain (`mma_dep_cycles_*` per mma.sync; 3xTF32 is
three tf32 mmas) and the time one warp needs to issue the step's instructions
(`issue_ipc_per_warp`). Constants marked "assumed" are estimates, not measurements; a
calibration file written on the GPU (benchmarks' calibration stage) replaces them:

    load()                    the defaults, overridden by $FUSEDRNN_CALIBRATION if set
    load("calibration.json")  the defaults overridden by that file

File format (schema 1): {"schema": 1, "meaningful": bool, "card": str, "sm_count": int,
"clock_ghz": float, "constants": {name: float}, "max_active_clusters": {...}, "notes": str}.
Unknown constants are ignored with a warning; a non-finite or negative value is refused.

`python -m fusedrnn.machine --header` prints csrc/machine_model.h (the C++ planner's copy of
the defaults and of the device limits, LIMITS; tests/test_machine_model.py checks the two agree).
"""
from __future__ import annotations

import json
import math
import sys
import warnings

from . import settings

#: the limits of an H100 SXM (sm_90), the one definition every planner starts from: the CUDA
#: plan_for takes this dict, the Triton config its DeviceLimits, the model its SM count
H100_LIMITS = dict(sms=132, smem_optin=227 * 1024, smem_per_sm=228 * 1024, regs_per_sm=65536, cc_major=9,
                   cc_minor=0, max_cluster=16, cooperative=1)

#: the constants a calibration file may override ("constants" of calibration.json), H100 SXM
CALIBRATED = {
    "grid_barrier_us": 1.12,        # cooperative grid sync, 132 CTAs (measured, docs/anchors.md)
    "flag_round_trip_us": 0.70,     # release store on one SM -> an acquire poll on another sees it (assumed)
    "l2_latency_us": 0.35,          # one dependent load served by L2, ~600 cycles (assumed)
    "cluster_barrier_us": 0.30,     # barrier.cluster arrive + wait, 16 CTAs (assumed)
    "cluster_barrier_pending_stores_us": 0.50,  # the same with global stores still in flight (assumed)
    "mma_dep_cycles_bf16": 32.0,    # one dependent mma.sync m16n8k16 in a chain (assumed, H100)
    "mma_dep_cycles_fp16": 32.0,
    "mma_dep_cycles_tf32": 32.0,    # m16n8k8 tf32; 3xTF32 chains three of them
    "launch_us": 3.9,               # one kernel launch, back to back (measured)
    "issue_ipc_per_warp": 0.5,      # instructions one warp issues per cycle in a step loop (assumed)
    "scheduler_ipc": 1.0,           # instructions one sub-partition's scheduler issues per cycle, its warps together
                                    # (Hopper dispatches one warp instruction per clock per scheduler)
}

#: constants no calibration file measures yet (datasheet-level, "assumed")
DEFAULTS = dict(CALIBRATED, **{
    "clock_ghz": 1.755,             # SM clock under load
    "sm_count": H100_LIMITS["sms"],
    "cta_sync_us": 0.03,            # bar.sync and the store -> load turnaround in shared memory
    "l2_bw_per_sm_gbs": 110.0,      # one SM's share of L2 reads (~64 B/clock)
    "l2_bw_gbs": 5500.0,            # whole-chip L2 read bandwidth
    "hbm_bw_gbs": 3000.0,           # achieved HBM bandwidth (3.35 TB/s peak)
    "smem_bytes_per_clk": 128.0,    # shared-memory bandwidth per SM
    "dsmem_bytes_per_clk": 32.0,    # stores into another CTA's shared memory (cluster)
    "wgmma_macs_per_clk": 2048.0,   # dense 16-bit MACs per SM per clock (989 TFLOP/s)
    "mma_sync_macs_per_clk": 1024.0,  # mma.sync on sm_90: about half of wgmma
    "tc_full_n": 64.0,              # batch side of the MMA at which it runs at full rate
    "fma_per_clk": 128.0,           # fp32 FMA units per SM (the CUDA per-step kernel's matmul)
    "warps_per_scheduler_issue": 4.0,  # SM sub-partitions: warps beyond 4 share a scheduler
    "gemm_tflops_16": 494.5,        # the GEMMs outside the recurrence: half of the 16-bit dense peak
    "gemm_tflops_32": 247.0,        # fp32 (3xTF32 or TF32 GEMMs): half of that
})

#: the device limits of the default machine (an H100 SXM) as the CUDA plan takes them (`limits`
#: of fusedrnn.ops.cuda.plan_for, DeviceLimits of csrc/plan.h): where no device is asked (the
#: plan without a GPU, the emulated device, the compile gate) these stand for it. The one copy:
#: the C++ side reads them from the generated csrc/machine_model.h.
LIMITS = {
    "sms": int(DEFAULTS["sm_count"]),  # multiprocessors
    "smem_optin": 227 * 1024,       # dynamic shared memory one CTA may opt in to (bytes)
    "smem_per_sm": 228 * 1024,      # shared memory per multiprocessor (bytes)
    "regs_per_sm": 65536,           # 32-bit registers per multiprocessor
    "cc_major": 9, "cc_minor": 0,
    "max_cluster": 16,              # CTAs per cluster with the non-portable attribute (sm_90 and newer)
    "cooperative": 1,               # cooperative launches supported
}
#: CTAs per cluster any sm_90 device runs without the non-portable attribute
PORTABLE_CLUSTER = 8

#: fields of calibration.json beside "constants" that override a default of the same name
TOP_LEVEL = ("clock_ghz", "sm_count")


def _check(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"fusedrnn.machine: calibration value {name!r} is not a number: {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"fusedrnn.machine: calibration value {name!r} must be finite and >= 0, got {v!r}")
    return v


def load(path: str | None = None) -> dict:
    """The machine model: DEFAULTS overridden by the calibration file at `path`, else at
    $FUSEDRNN_CALIBRATION, else none. Returns a fresh dict (the caller may change it)."""
    out = dict(DEFAULTS)
    path = path or settings.get("FUSEDRNN_CALIBRATION") or None
    if path is None:
        return out
    with open(path) as f:
        cal = json.load(f)
    if not isinstance(cal, dict) or not isinstance(cal.get("constants", {}), dict):
        raise ValueError(f"fusedrnn.machine: {path} is not a calibration file (a JSON object with 'constants')")
    for name in TOP_LEVEL:
        if cal.get(name) is not None:
            out[name] = _check(name, cal[name])
    for name, value in cal.get("constants", {}).items():
        if name not in CALIBRATED:
            warnings.warn(f"fusedrnn.machine: {path}: unknown constant {name!r} ignored", stacklevel=2)
            continue
        out[name] = _check(name, value)
    return out


_CURRENT: dict = {}


def current() -> dict:
    """load() for the calibration file $FUSEDRNN_CALIBRATION names now (cached per path): what
    the planners use when not given a machine model."""
    key = settings.get("FUSEDRNN_CALIBRATION") or ""
    if key not in _CURRENT:
        _CURRENT[key] = load()
    return _CURRENT[key]


def mma_dep_cycles(m: dict, bits: int) -> float:
    """Cycles of one dependent tensor-core k-step of a warp: one mma.sync for 16-bit, three
    tf32 mmas for fp32's 3xTF32."""
    return m["mma_dep_cycles_bf16"] if bits == 16 else 3 * m["mma_dep_cycles_tf32"]


def issue_us(m: dict, insts_per_warp: float, warps: int) -> float:
    """Time to issue `insts_per_warp` instructions per warp with `warps` warps per SM.

    One warp alone issues at `issue_ipc_per_warp` (its own dependences stall it the rest of
    the time). Beyond one warp per sub-partition, `share` warps take turns on one scheduler,
    which fills one warp's stalls with another's instructions up to its own rate,
    `scheduler_ipc`: each warp then issues at min(issue_ipc_per_warp, scheduler_ipc / share).
    (Until 2026-12-07 the model divided the single warp's rate by `share`, so that two warps
    on a scheduler together issued no faster than one: twice the issue time of 8-warp kernels.)"""
    share = max(1.0, warps / m["warps_per_scheduler_issue"])
    per_warp = min(m["issue_ipc_per_warp"], m["scheduler_ipc"] / share)
    if per_warp <= 0:
        raise ValueError("fusedrnn.machine: issue_ipc_per_warp and scheduler_ipc must be > 0 to price issue time")
    return insts_per_warp / per_warp / (m["clock_ghz"] * 1e3)


#: the C++ planner's names (csrc/machine_model.h) of the defaults it reads
CXX_NAMES = ("clock_ghz", "cta_sync_us", "l2_latency_us", "flag_round_trip_us", "cluster_barrier_us",
             "mma_dep_cycles_bf16", "mma_dep_cycles_tf32", "launch_us", "issue_ipc_per_warp",
             "warps_per_scheduler_issue", "smem_bytes_per_clk", "dsmem_bytes_per_clk", "l2_bw_gbs",
             "l2_bw_per_sm_gbs", "hbm_bw_gbs", "fma_per_clk")


def cxx_constants(m: dict | None = None) -> dict:
    """The constants the C++ planner reads ({CXX_NAMES: value}) of the machine model `m`
    (default: current(), so a calibration file counts): what fusedrnn.ops.cuda passes to
    the extension's plan and launch calls as `machine`."""
    m = current() if m is None else m
    return {n: float(m[n]) for n in CXX_NAMES}


def cxx_header(m: dict | None = None) -> str:
    """csrc/machine_model.h: the defaults as C++ constants, and the struct that carries a
    calibrated set into the planner (generated; do not edit by hand)."""
    m = m or DEFAULTS
    lines = ["// Generated by `python -m fusedrnn.machine --header` from fusedrnn/machine.py: the",
             "// machine model's H100 defaults for the CUDA planner. Do not edit by hand;",
             "// tests/test_machine_model.py checks this file against machine.py.",
             "#pragma once", "", "namespace fusedrnn {", "namespace machine {", ""]
    lines += [f"constexpr double {n} = {float(m[n])!r};" for n in CXX_NAMES]
    lines += ["", "// the device limits of the default machine (machine.py LIMITS; DeviceLimits, plan.h)",
              "namespace limits {", ""]
    lines += [f"constexpr int {n} = {int(v)};" for n, v in LIMITS.items()]
    lines += [f"constexpr int portable_cluster = {PORTABLE_CLUSTER};  // CTAs per cluster without the "
              "non-portable attribute", "", "}  // namespace limits"]
    lines += ["", "// The constants one plan is made with: these defaults unless the caller passes a calibrated",
              "// set (fusedrnn.machine.cxx_constants(), through the binding's `machine` argument).",
              "struct Constants {"]
    lines += [f"  double {n} = fusedrnn::machine::{n};" for n in CXX_NAMES]
    lines += ["};", "", "// f(name, field) for every constant of c: the binding sets a calibrated set by name.",
              "template <class F>", "void for_each(Constants& c, F&& f) {"]
    lines += [f'  f("{n}", c.{n});' for n in CXX_NAMES]
    lines += ["}", "", "}  // namespace machine", "}  // namespace fusedrnn", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--header"]:
        sys.stdout.write(cxx_header())
    else:
        print(json.dumps(load(), indent=1))
