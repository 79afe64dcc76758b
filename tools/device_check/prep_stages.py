"""The stages before the smoke: load (the CUDA kernels prebuilt here, the binding compiled
for the GPU host's Python, the carried Triton cache checked) and calibrate (the machine
model's constants measured). Nothing here runs nvcc, unless the prebuilt artifact is
refused and FUSEDRNN_PREBUILT=rebuild (the default on the GPU) asks for the full build."""
from __future__ import annotations

import json
import os
import time

from . import prebuilt, triton_cache
from .context import Ctx, StageResult

POLICY_ENV = "FUSEDRNN_PREBUILT"       # rebuild | refuse: what a refused artifact leads to
LOAD_LIMIT_S = 60                      # the prebuilt path's own limit on the GPU host: check, binding, import


def _gpu_arch(ctx: Ctx) -> str | None:
    cap = ctx.env_info.get("capability") if ctx.env_info.get("cuda") else None
    return cap.replace(".", "") if cap else None


def _last(path, prefix: str) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.startswith(prefix)]
    return lines[-1][len(prefix):].strip() if lines else ""


def load(ctx: Ctx, seconds: float) -> StageResult:
    from . import stages  # noqa: PLC0415  (stages.py lists this module's stages: imported at call time)
    r = StageResult("load", log="load/")
    d = ctx.work / "load"
    d.mkdir(parents=True, exist_ok=True)
    end = time.monotonic() + seconds
    arch = _gpu_arch(ctx)
    cmd = [ctx.python, "-m", f"{ctx.pkg}.prebuilt", "load", "-j", str(os.cpu_count() or 2)] + \
        (["--arch", arch] if arch else [])
    # a rehearsal's first binding build takes minutes on a busy CPU (ninja reuses it afterwards)
    o = stages._run(ctx, "load", cmd, d / "load.log", seconds if ctx.rehearse else min(seconds, LOAD_LIMIT_S))
    r.seconds = o.seconds
    if o.rc == 0:
        r.status, r.counts = "ok", _last(d / "load.log", "prebuilt: ")
    elif o.rc == prebuilt.REFUSED:
        why = _last(d / "load.log", "prebuilt: REFUSED: ")
        policy = os.environ.get(POLICY_ENV) or ("refuse" if ctx.rehearse else "rebuild")
        if policy == "rebuild":
            ctx.say(f"  prebuilt refused ({why}): building everything from source instead (device time!)")
            b = stages.build(ctx, max(5.0, end - time.monotonic()))
            r.seconds += b.seconds
            r.status = f"REBUILT from source ({b.status}): the prebuilt artifact was refused"
            r.counts, r.first_error = b.counts, why
            r.categories = list(b.categories) or ["other"]   # it ran, but the window paid for a compile
        else:
            r.status, r.first_error = "REFUSED", why
            r.add("build")
    else:
        r.status = "BUILD FAILED" if not o.timed_out else "TIMED OUT"
        r.first_error = stages._first_error(d / "load.log") or "fusedrnn._C does not import"
        r.add("build")
    if not r.categories or r.categories == ["other"]:
        _triton_cache(ctx, r, d)
    return r


def _triton_cache(ctx: Ctx, r: StageResult, d) -> None:
    """Point every later child at the carried cache and count its hits and misses; the
    interpreter (rehearsal) compiles nothing, so there it is only checked for presence."""
    from . import stages  # noqa: PLC0415
    where = (ctx.repo / triton_cache.DEFAULT_DIR).resolve()
    n = triton_cache.entries(where)
    info = {"dir": str(where), "entries_before": n, "relocated": triton_cache.relocate(where) if n else 0}
    if ctx.rehearse:
        info["note"] = "rehearsal: the Triton interpreter compiles nothing, the cache is not used"
    else:
        code = (f"import json; from {ctx.pkg}.triton_cache import check; m, why = check({str(where)!r}); "
                "print(json.dumps({'why': why, 'manifest': m}))")
        log = d / "triton_cache.log"
        o = stages.jobs.run([ctx.python, "-c", code], log, 60, env=ctx.child_env(), cwd=ctx.repo, grace_s=2)
        found = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("{")]
        got = json.loads(found[-1]) if found and o.rc == 0 else {"why": "the check failed: " + stages._first_error(log)}
        info["why_misses"] = got.get("why", "")
        info["warmed"] = (got.get("manifest") or {}).get("warmed_at")
        ctx.extra_env.update(TRITON_CACHE_DIR=str(where), TRITON_CACHE_MANAGER=triton_cache.MANAGER.replace(
            "tools.device_check", ctx.pkg), **{triton_cache.LOG_ENV: str(ctx.work / "triton_cache_lookups.log")})
    ctx.triton_cache = info
    r.counts += f"; triton cache: {n} kernels carried" + (f" ({info['why_misses']})" if info.get("why_misses") else "")


def calibrate(ctx: Ctx, seconds: float) -> StageResult:
    from . import stages  # noqa: PLC0415
    r = StageResult("calibrate", log="calibrate/")
    d = ctx.work / "calibrate"
    d.mkdir(parents=True, exist_ok=True)
    out = ctx.out / "calibration.json"
    cmd = [ctx.python, "-m", f"{ctx.pkg}.calibrate", "--out", str(out)] + (["--rehearse"] if ctx.rehearse else [])
    o = stages._run(ctx, "calibrate", cmd, d / "calibrate.log", seconds)
    r.seconds = o.seconds
    try:
        ctx.calibration = json.loads(out.read_text())
    except (OSError, ValueError):
        ctx.calibration = {}
    c = ctx.calibration
    if not c:
        r.status, r.first_error = "FAILED", stages._first_error(d / "calibrate.log") or "no calibration.json"
        r.add("other")
    elif c.get("meaningful"):
        r.status = "ok"
        r.counts = ", ".join(f"{k} {v:.3g}" for k, v in c["constants"].items()) + \
            f"; max active clusters {c.get('max_active_clusters')}"
    elif c.get("notes", "").startswith("not measured"):   # the prebuilt artifact was refused
        r.status, r.first_error = "NOT RUN", c["notes"][:240]
        r.add("other")
    elif ctx.rehearse:
        r.status = "plumbing ok: numbers NOT meaningful (CPU rehearsal)"
        r.counts = c.get("notes", "")[:240]
    else:
        r.status, r.first_error = "NOT MEASURED", c.get("notes", "")[:240]
        r.add("other")
    stages._timed_out(r, o, "the calibration")
    return r
