"""The stages of the device check. Each is `stage(ctx, seconds) -> StageResult`: it runs
its commands for at most `seconds` (jobs.py stops them with SIGINT, then SIGKILL) and
reads what they left behind. Logs go under ctx.work (packed into artifacts.tar.gz)."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from benchmarks import junit

from . import jobs, tiers
from .context import Ctx, StageResult

HANG_ENV = "FUSEDRNN_DEVICE_CHECK_HANG"    # test hook: the named stage hangs
FAIL_ENV = "FUSEDRNN_DEVICE_CHECK_FAIL"    # test hook: a planted failing test joins the tests stage
PROBE_TESTS = Path(__file__).with_name("probe_tests.py")


def _grace(ctx: Ctx, seconds: float) -> float:
    """Seconds between SIGINT and SIGKILL (pytest-xdist needs ~10 to stop and write junit)."""
    return min(15.0, max(1.0, seconds * 0.2))


def _hung(ctx: Ctx, name: str) -> bool:
    return os.environ.get(HANG_ENV) == name


def _run(ctx: Ctx, name: str, cmd, log: Path, seconds: float, env=None, echo=None) -> jobs.Outcome:
    """One command of a stage, ending `_grace` before the stage's own limit."""
    if _hung(ctx, name):
        cmd = [ctx.python, str(PROBE_TESTS), "hang"]
    grace = _grace(ctx, seconds)
    return jobs.run(cmd, log, max(1.0, seconds - grace), env=env or ctx.child_env(), cwd=ctx.repo, echo=echo,
                    grace_s=grace)


def _echo(ctx: Ctx, prefix: str):
    return lambda line: ctx.say(f"  {prefix}{line}")


def _first_error(path: Path, pattern=r"(error|Error|ERROR|Traceback|FAILED)") -> str:
    try:
        for line in path.read_text(errors="replace").splitlines():
            if re.search(pattern, line) and not line.startswith("$ "):
                return " ".join(line.split())[:240]
    except OSError:
        pass
    return ""


def _timed_out(r: StageResult, o: jobs.Outcome, what: str) -> None:
    if o.timed_out:
        r.status = "TIMED OUT"
        r.add("deadline")
        r.first_error = r.first_error or f"{what} stopped at its time limit"


# ---- env --------------------------------------------------------------------------------------

def env(ctx: Ctx, seconds: float) -> StageResult:
    r = StageResult("env", log="env/")
    d = ctx.work / "env"
    d.mkdir(parents=True, exist_ok=True)
    tools = {}
    end = time.monotonic() + seconds
    for tool, args in (("nvidia-smi", ["-q"]), ("nvcc", ["--version"]), ("compute-sanitizer", ["--version"]),
                       ("ncu", ["--version"])):
        if shutil.which(tool) is None:
            tools[tool] = None
            continue
        jobs.run([tool, *args], d / f"{tool}.txt", max(1.0, min(20.0, end - time.monotonic() - 5)), grace_s=2)
        lines = [ln for ln in (d / f"{tool}.txt").read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith(("$ ", "[exit"))]
        tools[tool] = lines[-1].strip() if tool != "nvidia-smi" else "nvidia-smi -q saved"
    o = _run(ctx, "env", [ctx.python, "-m", f"{ctx.pkg}.envinfo"], d / "envinfo.log",
             max(1.0, end - time.monotonic()))
    info = {}
    for line in reversed((d / "envinfo.log").read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            info = json.loads(line)
            break
    info["tools"] = tools
    ctx.env_info = info
    (d / "env.json").write_text(json.dumps(info, indent=1))
    r.seconds = o.seconds
    if o.timed_out or not info.get("torch"):
        r.status = "NO GPU"
        r.first_error = info.get("torch_error") or ("torch is not installed" if info.get("python") and not o.timed_out
                                                    else "could not read torch's view of the machine")
        r.add("no_gpu")
        return r
    if "torch_error" in info:
        r.status, r.first_error = "NO GPU", "torch cannot be imported: " + info["torch_error"]
        r.add("no_gpu")
        return r
    where = (f"{info['card']}, sm_{info['capability'].replace('.', '')}, {info['sms']} SMs" if info.get("cuda")
             else "no CUDA device")
    r.counts = (f"{where}; torch {info['torch']} (CUDA {info.get('torch_cuda')}, cuDNN {info.get('cudnn')}), "
                f"triton {info.get('triton')}, python {info['python']}")
    if not info.get("cuda") and not ctx.rehearse:
        r.status = "NO GPU"
        r.first_error = "torch sees no CUDA device: stopping (use --rehearse for the CPU rehearsal)"
        r.add("no_gpu")
        return r
    missing = [t for t in ("compute-sanitizer", "nvcc") if tools.get(t) is None]
    r.status = "ok" if ctx.rehearse or not missing else "ok (missing: " + ", ".join(missing) + ")"
    return r


# ---- build ------------------------------------------------------------------------------------

def _ptxas_report(log: Path, dest: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "ptxas" in ln]
    dest.write_text("\n".join(lines) + "\n")
    regs = [int(m) for ln in lines for m in re.findall(r"Used (\d+) registers", ln)]
    spills = [ln for ln in lines if re.search(r"[1-9]\d* bytes spill (stores|loads)", ln)]
    if not regs:
        return "ptxas: no kernel compiled (objects up to date)"
    return f"ptxas: {len(regs)} kernels, max {max(regs)} registers, {len(spills)} lines with spills"


def build(ctx: Ctx, seconds: float) -> StageResult:
    r = StageResult("build", log="build/")
    d = ctx.work / "build"
    d.mkdir(parents=True, exist_ok=True)
    extra = {"NVCC_APPEND_FLAGS": (os.environ.get("NVCC_APPEND_FLAGS", "") + " -Xptxas -v").strip()}
    cap = ctx.env_info.get("capability")
    if cap and not ctx.rehearse:
        extra["FUSEDRNN_CUDA_ARCHS"] = cap.replace(".", "")   # this GPU only: half the compile time
    n = str(os.cpu_count() or 2)
    end = time.monotonic() + seconds
    o = _run(ctx, "build", [ctx.python, "setup.py", "build_ext", "--inplace", "-j", n], d / "build.log",
             max(5.0, seconds - 15), env=ctx.child_env(**extra))
    ptx = _ptxas_report(d / "build.log", d / "ptxas.txt")
    check = jobs.run([ctx.python, "-c", "import fusedrnn._C as m; print('imported', m.__file__)"],
                     d / "import.log", max(5.0, end - time.monotonic()), env=ctx.child_env(), cwd=ctx.repo)
    r.seconds = o.seconds + check.seconds
    r.counts = ptx
    if check.rc != 0:
        r.status = "BUILD FAILED"
        r.first_error = _first_error(d / "build.log") or _first_error(d / "import.log") or "fusedrnn._C does not import"
        r.add("build")
        return r
    r.status = "ok" if o.rc == 0 else f"FAILED (rc {o.rc}) but fusedrnn._C imports"
    if o.rc != 0:
        r.add("other")
        r.first_error = _first_error(d / "build.log")
    _timed_out(r, o, "the build")
    return r


# ---- smoke and memcheck -----------------------------------------------------------------------

SMOKE_CATEGORY = {"WRONG": "wrong", "CRASH": "crash", "HANG": "crash", "MEMORY": "crash"}


def _smoke_cmd(ctx: Ctx, out: Path, jobs_n: int, per_kernel_s: float, sanitizer: bool) -> list[str]:
    cmd = [ctx.python, "-m", f"{ctx.pkg}.smoke", "--all", "--out", str(out), "--jobs", str(jobs_n),
           "--timeout", str(per_kernel_s)]
    return cmd + (["--rehearse"] if ctx.rehearse else []) + (["--sanitizer"] if sanitizer else [])


def _read_smoke(out: Path) -> list[dict]:
    try:
        return json.loads((out / "smoke.json").read_text())
    except (OSError, ValueError):
        return []


def _tally(results: list[dict]) -> str:
    counts: dict[str, int] = {}
    for x in results:
        counts[x["status"]] = counts.get(x["status"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: kv[0] != "ok"))


def smoke(ctx: Ctx, seconds: float) -> StageResult:
    r = StageResult("smoke", log="smoke/")
    out = ctx.work / "smoke"
    # per kernel: a Triton one compiles ~18 variants (3 dtypes x fwd/bwd x D1/D2/projection)
    cmd = _smoke_cmd(ctx, out, 2 if ctx.rehearse else 8, 120 if ctx.rehearse else 90, sanitizer=False)
    o = _run(ctx, "smoke", cmd, out / "driver.log", seconds, env=ctx.child_env(), echo=_echo(ctx, ""))
    ctx.smoke = _read_smoke(out)
    r.seconds, r.counts = o.seconds, f"{len(ctx.smoke)} kernels: {_tally(ctx.smoke)}"
    bad = [x for x in ctx.smoke if x["status"] in SMOKE_CATEGORY]
    for x in bad:
        r.add(SMOKE_CATEGORY[x["status"]])
    r.status = "ok" if not bad else "/".join(sorted({x["status"] for x in bad}))
    r.first_error = f"{bad[0]['id']}: {bad[0].get('detail', '')}"[:240] if bad else ""
    if o.rc not in (0, 1) and not o.timed_out:
        r.add("crash")
        r.first_error = r.first_error or _first_error(out / "driver.log")
    if o.timed_out and ctx.rehearse:
        # the CPU interpreter is slow, more so beside other work: what did not finish is named, not failed
        left = sum(x["status"] == "SLOW" or ("out of time" in x.get("detail", "")
                                              and not tiers.find(x["id"])[0].gpu_only) for x in ctx.smoke) or "some"
        r.status = f"cut at its limit: {left} kernels unfinished (slow CPU interpreter: not a failure in a rehearsal)"
        return r
    _timed_out(r, o, "the smoke stage")
    return r


# ---- tests ------------------------------------------------------------------------------------

def _pytest_cmd(ctx: Ctx, selection, junit_path: Path) -> list[str]:
    plugins = ctx.env_info.get("plugins", {})
    cmd = [ctx.python, "-m", "pytest", *selection, "-v", "-rfE", "--tb=short", "-p", "no:cacheprovider",
           "--junitxml", str(junit_path), "-o", "junit_family=xunit1", "--durations", "30"]
    # the CPU rehearsal runs in one process: its minute cannot hold xdist's start and ~10 s stop
    if plugins.get("xdist") and not ctx.rehearse:
        cmd += ["-n", "6"]
    if plugins.get("pytest_timeout"):
        cmd += ["--timeout", "120", "--timeout-method", "thread"]
    return cmd


def tests(ctx: Ctx, seconds: float) -> StageResult:
    r = StageResult("tests", log="tests/")
    d = ctx.work / "tests"
    d.mkdir(parents=True, exist_ok=True)
    junit_path = ctx.out / "junit.xml"
    selection = list(ctx.tests)
    probe = os.path.relpath(PROBE_TESTS, ctx.repo)
    if (os.environ.get(HANG_ENV) == "tests" or os.environ.get(FAIL_ENV)) and probe not in selection:
        selection.append(probe)
    grace = _grace(ctx, seconds)
    until = time.monotonic() + seconds - grace
    pytest_job = jobs.Job(_pytest_cmd(ctx, selection, junit_path), d / "pytest.log", env=ctx.child_env(), cwd=ctx.repo)
    memcheck_job = None
    mem_out = ctx.work / "memcheck"
    if not ctx.rehearse and ctx.env_info.get("tools", {}).get("compute-sanitizer"):
        memcheck_job = jobs.Job(_smoke_cmd(ctx, mem_out, 4, 150, sanitizer=True), mem_out / "driver.log",
                                env=ctx.child_env(), cwd=ctx.repo, echo=_echo(ctx, "memcheck "))
    o = pytest_job.wait(until, grace)
    mo = memcheck_job.wait(until, grace) if memcheck_job else None
    r.seconds = max(o.seconds, mo.seconds if mo else 0.0)
    rep = None
    if junit_path.exists():
        try:
            rep = junit.parse_junit(junit_path)
        except Exception as e:  # noqa: BLE001 - a half-written file: fall back on the log
            r.first_error = f"junit.xml unreadable ({e}); counts from the -v log"
    if rep is None:
        rep = junit.parse_verbose_log((d / "pytest.log").read_text(errors="replace"))
        junit.write_from_report(rep, junit_path, "pytest wrote no junit file (killed?): rebuilt from its -v log")
    if o.timed_out:
        for nid in junit.unfinished((d / "pytest.log").read_text(errors="replace")):
            rep.failures.append(junit.Failure(nid, junit.INTERRUPTED, "still running when the stage was stopped "
                                                                     "(slow, or hung)"))
    ctx.junit = {"tests": rep.tests, "passed": rep.passed, "failed": rep.failed, "errors": rep.errors,
                 "skipped": rep.skipped, "interrupted": rep.interrupted, "source": rep.source, "pytest_rc": o.rc}
    ctx.failures = [vars(f) for f in rep.failures]
    kinds = {f.kind for f in rep.failures}
    r.add("wrong" if junit.WRONG in kinds else None)
    r.add("crash" if kinds & {junit.CRASH, junit.HANG} else None)
    r.counts = rep.counts()
    r.status = "ok" if not [f for f in rep.failures if f.kind != junit.INTERRUPTED] else "FAILED"
    if rep.failures:
        f = rep.failures[0]
        r.first_error = f"{f.nodeid}: {f.message}"[:240]
    if o.rc in (3, 4) or (o.rc == 5 and not rep.tests):
        r.status, r.first_error = f"FAILED (pytest rc {o.rc})", _first_error(d / "pytest.log", r"(ERROR|error)")
        r.add("other")
    if not ctx.rehearse:
        if memcheck_job is None:
            r.counts += "; memcheck: compute-sanitizer not on PATH"
            r.add("other")
        else:
            ctx.memcheck = _read_smoke(mem_out)
            r.counts += f"; memcheck: {_tally(ctx.memcheck) or 'no result'}"
            bad = [x for x in ctx.memcheck if x["status"] in SMOKE_CATEGORY]
            if bad:
                r.add("crash")
                r.status = "FAILED"
                r.first_error = r.first_error or f"memcheck {bad[0]['id']}: {bad[0].get('detail', '')}"[:240]
    _timed_out(r, o if o.timed_out else (mo or o), "pytest" if o.timed_out else "memcheck")
    return r


# ---- bench ------------------------------------------------------------------------------------

REHEARSE_BENCH = ["--shapes", "2,4,8", "--cells", "lstm", "--providers", "torch-cpu,fusedrnn-reference",
                  "--cases", "layer", "--reps", "3", "--warmup", "1"]


def bench(ctx: Ctx, seconds: float) -> StageResult:
    r = StageResult("bench", log="bench/")
    dtypes = list(ctx.bench_dtypes or (("fp32", "bf16") if ctx.rehearse else ("bf16", "fp16", "fp32")))
    end = time.monotonic() + seconds
    margin = 3.0 if ctx.rehearse else 15.0   # a case started just before the limit must still finish
    parts = []
    for i, dt in enumerate(dtypes):
        share = (end - time.monotonic()) / (len(dtypes) - i)
        if share < 5:
            parts.append(f"{dt}: no time")
            r.add("deadline")
            continue
        out = ctx.work / "bench" / dt
        cmd = [ctx.python, "-m", f"{ctx.suite}.run", "--dtypes", dt, "--out", str(out), "--progress", "lines",
               "--time-limit", f"{max(1.0, share - margin - _grace(ctx, share)):.0f}", "--no-plot"]
        cmd += REHEARSE_BENCH if ctx.rehearse else []
        o = _run(ctx, "bench", cmd, ctx.work / "bench" / f"{dt}.log", share, echo=_progress_only(ctx, dt))
        r.seconds += o.seconds
        parts.append(_read_bench(ctx, r, dt, out, o))
    r.counts = "; ".join(parts)
    r.status = "ok" if not r.categories else "/".join(
        {"wrong": "WRONG", "crash": "ERRORS", "deadline": "INCOMPLETE"}.get(c, c.upper()) for c in r.categories)
    return r


def _progress_only(ctx: Ctx, dt: str):
    """The console gets the suite's per-case lines and anything alarming; the log gets all."""
    say = _echo(ctx, f"[{dt}] ")

    def echo(line: str) -> None:
        if line.startswith("[") or re.search(r"WRONG|Error|Traceback|wrote ", line):
            say(line)
    return echo


def _read_bench(ctx: Ctx, r: StageResult, dt: str, out: Path, o: jobs.Outcome) -> str:
    try:
        data = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        r.add("crash" if not o.timed_out else "deadline")
        r.first_error = r.first_error or f"{dt}: no results.json; {_first_error(ctx.work / 'bench' / f'{dt}.log')}"
        return f"{dt}: no results"
    shutil.copyfile(out / "results.json", ctx.out / f"results-{dt}.json")
    rows = data["rows"]
    ctx.bench[dt] = {"file": f"results-{dt}.json", "rows": rows, "summary": data["summary"], "meta": data["meta"]}
    wrong = [x for x in rows if x["status"] == "WRONG"]
    errors = [x for x in rows if x["status"] == "error"]
    skipped = [x for x in rows if x["status"] == "skipped"]
    timed = sum(x.get("median_ms") is not None for x in rows)
    r.add("wrong" if wrong else None)
    r.add("crash" if errors or (o.rc not in (0, 1) and not o.timed_out) else None)
    r.add("deadline" if skipped or o.timed_out else None)
    first = (wrong or errors or [None])[0]
    if first and not r.first_error:
        r.first_error = f"{dt} {first['provider']} {first['case']} {first['mode']}: {first['status']} {first['note']}"[:240]
    return f"{dt}: {timed} timed, {len(wrong)} wrong, {len(errors)} errors, {len(skipped)} skipped"


# ---- triage -----------------------------------------------------------------------------------

def triage(ctx: Ctx, seconds: float) -> StageResult:
    r = StageResult("triage", log="triage/")
    picked = [f for f in ctx.failures if f["kind"] != junit.INTERRUPTED][:5]
    if not picked:
        r.status, r.counts = "ok", "no failing test to rerun"
        return r
    d = ctx.work / "triage"
    end = time.monotonic() + seconds
    sanitize = not ctx.rehearse and ctx.env_info.get("tools", {}).get("compute-sanitizer")
    for i, f in enumerate(picked):
        share = min(90.0, (end - time.monotonic()) / (len(picked) - i))
        if share < 5:
            ctx.triage.append({"nodeid": f["nodeid"], "result": "not rerun: no time left"})
            continue
        cmd = [ctx.python, "-m", "pytest", f["nodeid"], "-p", "no:cacheprovider", "-q", "-rfE", "--tb=long"]
        if ctx.env_info.get("plugins", {}).get("xdist"):
            cmd += ["-p", "no:xdist"]
        env = ctx.child_env(CUDA_LAUNCH_BLOCKING=1, PYTORCH_NO_CUDA_MEMORY_CACHING=1)
        if sanitize:
            cmd = ["compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "99", "--print-limit", "30"] + cmd
        log = d / f"{i}.log"
        o = _run(ctx, "triage", cmd, log, share, env=env)
        r.seconds += o.seconds
        text = log.read_text(errors="replace")
        found = re.findall(r"ERROR SUMMARY: (\d+) error", text)
        if o.timed_out:
            res = "timed out again"
        elif o.rc == 99 or (found and int(found[-1]) > 0):
            res = f"compute-sanitizer: {found[-1] if found else '?'} memory errors"
            r.add("crash")
        elif o.rc == 0:
            res = "passes alone (order-dependent, or flaky)"
        else:
            res = "fails alone" + (" (memcheck clean)" if sanitize else "")
        ctx.triage.append({"nodeid": f["nodeid"], "result": res, "log": f"triage/{i}.log"})
    r.status = "ok"
    r.counts = f"{len(ctx.triage)} reruns" + (" under memcheck" if sanitize else "")
    return r


from . import prep_stages  # noqa: E402  (it uses this module's helpers)

RUNNERS = {"env": env, "load": prep_stages.load, "calibrate": prep_stages.calibrate, "smoke": smoke,
           "tests": tests, "bench": bench, "triage": triage}
