"""One tiny forward + backward per kernel (backend x tier x cell, see tiers.py), each in
its own process under its own time limit, so a crash poisons nothing else and a hang
costs seconds. One line per kernel as it finishes; smoke.json holds them all.

    python -m tools.device_check.smoke --all --out DIR [--jobs N] [--timeout S] [--sanitizer]
    python -m tools.device_check.smoke --one cuda/persistent/lstm --result FILE

--sanitizer runs each kernel under `compute-sanitizer --tool memcheck` (the check beside
the tests) with PyTorch's caching allocator off, so an out-of-bounds access cannot land
inside a pooled block. The parent sets CUDA_LAUNCH_BLOCKING=1 and the backends' debug
switches (NaN-filled outputs, barrier time-outs raise) for every kernel.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import jobs, tiers

OK, WRONG, CRASH, HANG, SKIPPED, MEMORY = "ok", "WRONG", "CRASH", "HANG", "skipped", "MEMORY"
#: a kernel past its limit in the CPU interpreter: slow (and slower beside other work), not hung
SLOW = "SLOW"
#: the dtypes of a rehearsal's kernels (the interpreter runs each dtype's calls anew: one is enough there)
REHEARSE_DTYPES = ("fp32",)
#: the benchmark suite's floors (max|out - ref| / max|ref|), loose on purpose: the smoke
#: finds crashes and gross errors; the tests hold the exact tolerances
TOL = {"fp32": 5e-3, "bf16": 5e-2, "fp16": 1e-2}
DEBUG_ENV = {"CUDA_LAUNCH_BLOCKING": "1", "FUSEDRNN_CUDA_POISON": "1", "FUSEDRNN_DEBUG": "1",
             "PYTHONUNBUFFERED": "1"}


# ---- the worker: one kernel, in this process ---------------------------------------------

def describe(backend: str, cell: str, dtype, B: int, H: int, device, backward: bool) -> dict | str:
    """What the backend itself says it launches for this call (its plan), or why it cannot say."""
    try:
        if backend == "cuda":
            from fusedrnn.ops import cuda  # noqa: PLC0415
            return dict(cuda.plan(cell, dtype, B, H, backward=backward, device=device))
        if backend == "triton":
            from fusedrnn.ops.triton import config  # noqa: PLC0415
            return dict(config.choose(cell, B, H, dtype, config.device_limits(device),
                                      direction="bwd" if backward else "fwd")._asdict())
        return {}
    except Exception as e:  # noqa: BLE001 - reported, not fatal: the plan API may have moved
        return f"{type(e).__name__}: {e}"


def _rel_err(outs, refs) -> float:
    worst = 0.0
    for a, r in zip(outs, refs, strict=True):
        a, r = a.detach().double(), r.detach().double()
        if not bool(a.isfinite().all()):
            return float("inf")
        scale = r.abs().max().item() or 1.0
        worst = max(worst, (a - r).abs().max().item() / scale)
    return worst


#: the calls each kernel gets per dtype: (reverse, lengths, directions, proj_size); contract v2's
#: both directions in one launch for every cell, and the LSTM projection (P=16 < H) with them
CALLS = ((False, True, 1, 0), (True, False, 1, 0), (False, True, 2, 0))
LSTM_CALLS = CALLS + ((False, True, 2, 16),)


def _one_call(cell, T, B, H, dtype, device, call, backend, seed):
    """fwd + bwd of `backend` and of the float64 reference on the same rounded inputs."""
    import torch  # noqa: PLC0415

    from fusedrnn.ops import GATES, recurrence  # noqa: PLC0415
    reverse, with_lengths, D, P = call
    g = torch.Generator().manual_seed(seed)
    G, lead, width = GATES[cell], ((D,) if D == 2 else ()), P or H
    uniform = lambda *s: (torch.rand(*lead, *s, generator=g) * 2 - 1) / H ** 0.5  # noqa: E731
    base = [torch.randn(T, B, D * G * H, generator=g) * 0.7, torch.randn(*lead, B, width, generator=g) * 0.5,
            torch.randn(*lead, B, H, generator=g) * 0.5 if cell == "lstm" else None,
            uniform(G * H, width), uniform(G * H), uniform(width, H) if P else None]
    lengths = None
    if with_lengths:
        lengths = torch.tensor([T] + [max(1, T - 1 - i) for i in range(B - 1)], device=device)
    probes = None
    results = []
    for be, dt in ((backend, dtype), ("reference", torch.float64)):
        leaves = [t.to(dtype).to(device=device, dtype=dt).clone().requires_grad_(True) if t is not None else None
                  for t in base]
        gx, h0, c0, w_hh, b_hh, w_hr = leaves
        outs = recurrence(cell, gx, h0, c0, w_hh, b_hh, lengths=lengths, reverse=reverse, backend=be, w_hr=w_hr)
        outs = [o for o in outs if o is not None]
        if probes is None:
            probes = [torch.randn(o.shape, generator=g).to(device) for o in outs]
        sum((o.double() * p).sum() for o, p in zip(outs, probes)).backward()
        results.append(list(outs) + [t.grad for t in leaves if t is not None])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return _rel_err(*results)


def run_one(kernel_id: str, only_dtypes=None) -> dict:
    tier, cell = tiers.find(kernel_id)
    import torch  # noqa: PLC0415

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if tier.tuning:
        from fusedrnn.ops.triton import config  # noqa: PLC0415
        config.TUNING.update(tier.tuning)
    T, B, H = tier.shape
    out = {"id": kernel_id, "device": device.type, "errors": {}, "plan": {}, "status": OK, "detail": ""}
    for name in [d for d in tier.dtypes if only_dtypes is None or d in only_dtypes] or tier.dtypes[:1]:
        worst = 0.0
        for i, call in enumerate(LSTM_CALLS if cell == "lstm" else CALLS):
            worst = max(worst, _one_call(cell, T, B, H, dtypes[name], device, call, tier.backend, i))
        out["errors"][name] = worst
        if not worst <= TOL[name]:
            out["status"] = WRONG
            out["detail"] += f"{name} error {worst:.2e} > {TOL[name]:.0e}; "
    first = dtypes[tier.dtypes[0]]
    for direction, bwd in (("fwd", False), ("bwd", True)):
        out["plan"][direction] = describe(tier.backend, cell, first, B, H, device, bwd)
    fwd = out["plan"]["fwd"]
    if tier.expect:
        if isinstance(fwd, dict) and all(k in fwd for k in tier.expect):
            got = {k: fwd[k] for k in tier.expect}
            if got != tier.expect:
                out["status"] = WRONG if out["status"] == OK else out["status"]
                out["detail"] += f"tier not forced: expected {tier.expect}, the backend planned {got}; "
        else:
            out["detail"] += f"tier unverified (the backend's plan says {fwd!r:.120}); "
    return out


# ---- the driver: every kernel, each in a process --------------------------------------------

_MEMCHECK = ["compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "99", "--print-limit", "30"]
_SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) error")


def _line(r: dict) -> str:
    errs = " ".join(f"{k} {v:.1e}" for k, v in r.get("errors", {}).items() if isinstance(v, float))
    plan = r.get("plan", {}).get("fwd")
    plan_s = ""
    if isinstance(plan, dict) and plan:
        plan_s = "plan " + ",".join(f"{k}={v}" for k, v in list(plan.items())[:6])
    text = f"{r['id']:<26} {r['status']:<8} {r.get('seconds', 0):5.1f}s  {errs}  {r.get('detail', '')}{plan_s}"
    return text.rstrip()


def drive(out: Path, rehearse: bool, n_jobs: int, timeout_s: float, sanitizer: bool, python: str) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    has_cuda = _probe_cuda(python)
    ids = tiers.kernel_ids(rehearse)
    results: dict[str, dict] = {}
    running: dict[str, jobs.Job] = {}
    lock = threading.Lock()
    stopping = threading.Event()

    def save():
        with lock:
            ordered = [results[i] for i in ids if i in results]
        (out / "smoke.json").write_text(json.dumps(ordered, indent=1))

    def one(kid: str) -> None:
        tier, _ = tiers.find(kid)
        if stopping.is_set():
            return
        if tier.gpu_only and not has_cuda:
            r = {"id": kid, "status": SKIPPED, "detail": "needs a CUDA GPU (not in the interpreter)", "seconds": 0.0}
        else:
            result_file = out / (kid.replace("/", "__") + ".json")
            result_file.unlink(missing_ok=True)
            env = dict(os.environ, **DEBUG_ENV, **tier.env)
            if not has_cuda:
                env["TRITON_INTERPRET"] = "1"
            cmd = [python, "-m", f"{__package__}.smoke", "--one", kid, "--result", str(result_file)]
            if rehearse:
                cmd += ["--dtypes", ",".join(REHEARSE_DTYPES)]
            if sanitizer:
                env["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"
                cmd = _MEMCHECK + cmd
            job = jobs.Job(cmd, out / (kid.replace("/", "__") + ".log"), env=env)
            with lock:
                running[kid] = job
            o = job.wait(time.monotonic() + timeout_s, grace_s=3)
            with lock:
                running.pop(kid, None)
            r = _judge(kid, o, result_file, out / (kid.replace("/", "__") + ".log"), sanitizer, timeout_s,
                       interpreted=not has_cuda)
            if stopping.is_set() and o.timed_out:
                r.update(status=SKIPPED, detail="stopped: the stage ran out of time")
        with lock:
            results[kid] = r
            print(_line(r), flush=True)
        save()

    def on_signal(signum, frame):  # the stage's limit: stop every kernel, keep what finished
        stopping.set()
        with lock:
            live = list(running.values())
        for job in live:
            job.stop(grace_s=2)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    what = "compute-sanitizer memcheck" if sanitizer else "smoke"
    print(f"{what}: {len(ids)} kernels, {n_jobs} at a time, {timeout_s:.0f}s each"
          f"{'' if has_cuda else ' (no CUDA: Triton interpreter, GPU-only tiers skipped)'}", flush=True)
    if sanitizer and not _which("compute-sanitizer"):
        print("compute-sanitizer is not on PATH", flush=True)
        return []
    with ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        list(pool.map(one, ids))
    save()
    for kid in ids:
        if kid not in results:
            results[kid] = {"id": kid, "status": SKIPPED, "detail": "not started: the stage ran out of time"}
    save()
    return [results[i] for i in ids]


def _which(name: str) -> str | None:
    import shutil  # noqa: PLC0415
    return shutil.which(name)


def _probe_cuda(python: str) -> bool:
    import subprocess  # noqa: PLC0415
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"
    try:
        return subprocess.run([python, "-c", code], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith("[exit")]
    except OSError:
        return ""
    return " | ".join(ln.strip()[:200] for ln in lines[-n:])


def _judge(kid, o: jobs.Outcome, result_file: Path, log: Path, sanitizer: bool, timeout_s: float,
           interpreted: bool = False) -> dict:
    r = {"id": kid, "seconds": round(o.seconds, 1), "rc": o.rc}
    if result_file.exists():
        r.update(json.loads(result_file.read_text()))
    if o.timed_out and interpreted:
        r.update(status=SLOW, detail=f"still running after {timeout_s:.0f}s in the CPU interpreter: slow, not a hang "
                                     f"(rerun alone: python -m {__package__}.smoke --one {kid})")
    elif o.timed_out:
        r.update(status=HANG, detail=f"no answer after {timeout_s:.0f}s (hang?); last output: {_tail(log)}")
    elif sanitizer:
        found = _SUMMARY.findall(log.read_text(errors="replace")) if log.exists() else []
        n = int(found[-1]) if found else None
        r["sanitizer_errors"] = n
        if o.rc == 99 or (n or 0) > 0:
            r.update(status=MEMORY, detail=f"compute-sanitizer: {n} errors; {_tail(log, 2)}")
        elif o.rc != 0:
            r.update(status=CRASH, detail=f"exit {o.rc}: {_tail(log)}")
        elif "status" not in r:
            r.update(status=CRASH, detail="no result written")
    elif o.rc != 0 or "status" not in r:
        r.update(status=CRASH, detail=f"exit {o.rc}: {_tail(log)}")
    return r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.device_check.smoke", description=__doc__.splitlines()[0])
    p.add_argument("--one", metavar="BACKEND/TIER/CELL")
    p.add_argument("--result", type=Path)
    p.add_argument("--all", action="store_true")
    p.add_argument("--rehearse", action="store_true")
    p.add_argument("--out", type=Path)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--sanitizer", action="store_true")
    p.add_argument("--dtypes", default=None, help="with --one: comma list, a subset of the tier's dtypes")
    args = p.parse_args(argv)
    if args.one:
        result = run_one(args.one, args.dtypes.split(",") if args.dtypes else None)
        if args.result:
            args.result.write_text(json.dumps(result))
        print(_line(result))
        return 0
    if not (args.all and args.out):
        p.error("give --one ID, or --all with --out DIR")
    results = drive(args.out, args.rehearse, args.jobs, args.timeout, args.sanitizer, sys.executable)
    bad = [r for r in results if r["status"] not in (OK, SKIPPED, SLOW)]
    return 1 if bad or not results else 0


if __name__ == "__main__":
    sys.exit(main())
