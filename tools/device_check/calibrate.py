"""`python -m tools.device_check.calibrate --out FILE`: the machine model's constants
measured on this GPU (fusedrnn/machine.py reads the file: FUSEDRNN_CALIBRATION=FILE).

The micro-benchmarks are CUDA kernels built ahead (calibrate.cu, in the prebuilt folder
beside the kernel library; prebuilt.py), called through ctypes: no compiler and no torch
here. Each constant is the median of REPS runs. `max_active_clusters` asks the GPU
(cudaOccupancyMaxActiveClusters) about the real LSTM bf16 forward persistent kernel of the
kernel library, with the shared memory the cluster tier's plan gives it. Without a GPU
(the CPU rehearsal) the same plumbing runs, the file says "meaningful": false and holds no
constants. The file's schema is the one fusedrnn/machine.py documents (schema 1).
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

from . import prebuilt

REPS = 5
#: what `measure` writes into "constants" (fusedrnn/machine.py's calibrated names; benchmarks/NOTES.md's table)
CONSTANTS = ("grid_barrier_us", "flag_round_trip_us", "l2_latency_us", "cluster_barrier_us",
             "cluster_barrier_pending_stores_us", "mma_dep_cycles_bf16", "mma_dep_cycles_fp16",
             "mma_dep_cycles_tf32", "launch_us", "issue_ipc_per_warp", "scheduler_ipc")
#: the real kernel whose occupancy is asked for, and the call whose cluster plan sizes its shared memory
OCCUPANCY_KERNEL = "FwdPass<fusedrnn::LstmCell, __nv_bfloat16>"
OCCUPANCY_CALL = dict(cell="lstm", dtype=2, B=64, H=1024)   # dtype code 2: bfloat16
#: the generated C++ copy of fusedrnn/machine.py's limits, read as text (this module avoids importing fusedrnn)
MACHINE_HEADER = Path(__file__).resolve().parents[2] / "csrc" / "machine_model.h"


def default_smem_optin() -> int:
    """The default device's opt-in shared memory per block, from csrc/machine_model.h."""
    m = re.search(r"\bsmem_optin\s*=\s*(\d+)", MACHINE_HEADER.read_text())
    if m is None:
        raise RuntimeError(f"{MACHINE_HEADER} names no smem_optin")
    return int(m.group(1))


class NoGpu(RuntimeError):
    pass


def _lib(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.cal_error_string.restype = ctypes.c_char_p
    return lib


def _call(lib, fn: str, *args) -> None:
    err = getattr(lib, fn)(*args)
    if err:
        raise NoGpu(f"{fn}: CUDA error {err} ({lib.cal_error_string(err).decode()})")


def _median(lib, fn: str, *args, outs: int = 1) -> list[float]:
    """The median over REPS runs of each double `fn` writes after `args`."""
    runs = []
    for _ in range(REPS):
        vals = [ctypes.c_double() for _ in range(outs)]
        _call(lib, fn, *args, *[ctypes.byref(v) for v in vals])
        runs.append([v.value for v in vals])
    return [statistics.median(r[i] for r in runs) for i in range(outs)]


def measure(lib) -> tuple[dict, dict]:
    """(constants, extra facts) on device 0."""
    c, extra = {}, {}
    ghz, = _median(lib, "cal_clock_ghz")
    extra["clock_ghz"] = ghz
    c["grid_barrier_us"], = _median(lib, "cal_grid_barrier_us", ctypes.c_int(2000))
    same = ctypes.c_int()
    runs = []
    for _ in range(REPS):
        v = ctypes.c_double()
        _call(lib, "cal_flag_one_way_us", ctypes.c_int(20000), ctypes.byref(v), ctypes.byref(same))
        runs.append(v.value)
    c["flag_round_trip_us"] = statistics.median(runs)
    extra["flag_ctas_on_one_sm"] = bool(same.value)
    c["l2_latency_us"], extra["l2_latency_cycles"] = _median(lib, "cal_l2_latency", ctypes.c_int(100000), outs=2)
    cluster = 16
    try:
        c["cluster_barrier_us"], = _median(lib, "cal_cluster_barrier_us", ctypes.c_int(16), ctypes.c_int(20000),
                                           ctypes.c_int(0))
    except NoGpu as e:  # clusters of 16 need the non-portable size: fall back to the portable 8
        extra["cluster_16_refused"] = str(e)
        cluster = 8
        c["cluster_barrier_us"], = _median(lib, "cal_cluster_barrier_us", ctypes.c_int(8), ctypes.c_int(20000),
                                           ctypes.c_int(0))
    c["cluster_barrier_pending_stores_us"], = _median(lib, "cal_cluster_barrier_us", ctypes.c_int(cluster),
                                                      ctypes.c_int(20000), ctypes.c_int(1))
    extra["cluster_barrier_size"] = cluster
    for kind, name in enumerate(("bf16", "fp16", "tf32")):
        c[f"mma_dep_cycles_{name}"], = _median(lib, "cal_mma_dep_cycles", ctypes.c_int(kind), ctypes.c_int(100000))
    c["launch_us"], = _median(lib, "cal_launch_us", ctypes.c_int(2000))
    c["issue_ipc_per_warp"], = _median(lib, "cal_issue_ipc", ctypes.c_int(100000))
    c["scheduler_ipc"], = _median(lib, "cal_scheduler_ipc", ctypes.c_int(100000))
    assert tuple(c) == CONSTANTS, tuple(c)
    return c, extra


def _load_binding(module_path: Path):
    """fusedrnn._C straight from its file (no torch import: the package's __init__ is not run)."""
    spec = importlib.util.spec_from_file_location("_C", module_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def max_active_clusters(repo: Path, manifest: dict) -> tuple[dict, str]:
    """({"16": n, "8": n}, what was asked) for the real persistent kernel, via the kernel library."""
    stubs = manifest.get("persistent_kernels", {})
    offset = next((v for d, v in stubs.items() if OCCUPANCY_KERNEL in d), None)
    if offset is None or prebuilt.BASE_SYMBOL not in stubs:
        raise NoGpu(f"the prebuilt manifest names no persistent kernel {OCCUPANCY_KERNEL}")
    kernels = ctypes.CDLL(str(repo / "fusedrnn" / manifest["library"]))
    base = ctypes.cast(getattr(kernels, prebuilt.BASE_SYMBOL), ctypes.c_void_p).value - stubs[prebuilt.BASE_SYMBOL]
    handle = ctypes.c_void_p(base + offset)   # the host stub's address in this process
    occupancy = kernels.fusedrnn_max_active_clusters
    module = next((repo / "fusedrnn").glob("_C.*.so"), None)
    smem, how = None, ""
    if module is not None:
        _C = _load_binding(module)
        a = OCCUPANCY_CALL
        try:
            p = _C.plan(False, a["cell"], a["dtype"], a["B"], a["H"], 0, "cluster", 0, 0, 0, 0, 1)
            smem, how = p["smem_bytes"], f"the cluster plan of lstm bf16 B={a['B']} H={a['H']} ({p['cluster']} CTAs)"
        except (RuntimeError, ValueError) as e:
            how = f"no cluster plan ({e})"
    if smem is None:
        try:
            smem, how = _C.device_limits(0)["smem_optin"] - 1024, how + "; the opt-in maximum"
        except (NameError, RuntimeError, ValueError):   # no binding, or no device: an H100's, for the plumbing
            smem, how = default_smem_optin() - 1024, how + "; the default device's opt-in maximum (no device to ask)"
    out, regs = {}, ctypes.c_int()
    for size in (16, 8):
        n = ctypes.c_int(-1)
        err = occupancy(handle, ctypes.c_int(size), ctypes.c_int(smem), ctypes.byref(n), ctypes.byref(regs))
        out[str(size)] = n.value if err == 0 else None
        if err:
            how += f"; clusters of {size}: CUDA error {err}"
    return out, f"{OCCUPANCY_KERNEL} persistent kernel, {regs.value} registers, {smem} bytes of dynamic shared memory ({how})"


def calibrate(repo: Path, where: Path, rehearse: bool) -> dict:
    t0 = time.monotonic()
    result = {"schema": 1, "meaningful": False, "card": None, "sm_count": None, "clock_ghz": None,
              "constants": {}, "max_active_clusters": {}, "notes": ""}
    manifest, why = prebuilt.check(repo, where)
    if why:
        result["notes"] = f"not measured: {why}"
        return result
    lib = _lib(repo / where / manifest["calibrate_library"])
    notes = [f"micro-benchmarks from the prebuilt {manifest['calibrate_library']} (sources "
             f"{manifest['source_hash'][:12]}), median of {REPS} runs"]
    try:
        sms, name = ctypes.c_int(), ctypes.create_string_buffer(256)
        _call(lib, "cal_device", ctypes.byref(sms), name, ctypes.c_int(256))
        result.update(card=name.value.decode(), sm_count=sms.value)
        constants, extra = measure(lib)
        result["clock_ghz"] = extra.pop("clock_ghz")
        result["constants"] = constants
        clusters, what = max_active_clusters(repo, manifest)
        result["max_active_clusters"] = clusters
        notes.append(f"max_active_clusters: {what}")
        notes.append("flag_round_trip_us: one way (half of a release/acquire ping-pong between two CTAs"
                     + (", which shared an SM" if extra.get("flag_ctas_on_one_sm") else " on two SMs") + ")")
        notes.append(f"cluster barriers: clusters of {extra['cluster_barrier_size']}")
        result["extra"] = extra
        result["meaningful"] = not rehearse
    except NoGpu as e:
        notes.append(f"not meaningful: no GPU measurement ({e})"
                     + ("; CPU rehearsal: only the plumbing ran" if rehearse else ""))
        try:   # the occupancy query's plumbing too: symbol, address, the library's C function
            clusters, what = max_active_clusters(repo, manifest)
            notes.append(f"occupancy plumbing: {what}: {clusters}")
        except NoGpu as e2:
            notes.append(f"occupancy plumbing stopped: {e2}")
    result["notes"] = "; ".join(notes)
    result["seconds"] = round(time.monotonic() - t0, 2)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.device_check.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="calibration.json to write")
    p.add_argument("--dir", type=Path, default=prebuilt.DEFAULT_DIR, help="the prebuilt folder")
    p.add_argument("--rehearse", action="store_true", help="CPU rehearsal: the plumbing only")
    args = p.parse_args(argv)
    result = calibrate(prebuilt.ROOT, args.dir, args.rehearse)
    tmp = args.out.with_name(args.out.name + ".part")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, args.out)
    c = result["constants"]
    print(f"calibration: meaningful={result['meaningful']}; " + (", ".join(f"{k}={v:.3g}" for k, v in c.items())
                                                               or result["notes"]))
    return 0 if result["meaningful"] or args.rehearse else 1


if __name__ == "__main__":
    sys.exit(main())
