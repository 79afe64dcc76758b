"""`bash benchmarks/device_check.sh [--rehearse] [--deadline S]` (this module does the work).

One run on the lent GPU machine: env -> load (prebuilt kernels) -> calibrate -> smoke -> tests (with
compute-sanitizer beside) -> bench -> triage, every stage under min(its cap, the time
left), stopped with SIGINT then SIGKILL. $OUT gets summary.md (rewritten after every
stage), junit.xml, results-<dtype>.json, device_check.log and artifacts.tar.gz.
--rehearse runs the same pipeline on the CPU (Triton interpreter, tiny shapes, the
reference and torch providers, no sanitizer). Exit codes: see context.CODE_MEANING.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from . import pack, plan, stages, summary
from .context import CODE_MEANING, USAGE, Ctx, StageResult, default_tests


class _Stop(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """Bad usage is one line on stderr and exit code USAGE (no usage text before it)."""
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def writable_folder(path: Path, what: str) -> str | None:
    """None once `path` is a folder this run can write to (created if need be), else why not:
    OUT=/dev/null, a regular file or an impossible path is bad usage, not a traceback later."""
    if path.exists() and not path.is_dir():
        return f"{what} {path} exists and is not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        return f"{what} {path} cannot be used as a folder to write to: {e.strerror or e}"
    return None


def parse(argv):
    p = _Parser(prog="bash benchmarks/device_check.sh", description=__doc__.split("\n\n")[0],
                epilog="Exit codes: " + "; ".join(f"{c} = {m}" for c, m in sorted(CODE_MEANING.items())))
    p.add_argument("--rehearse", action="store_true", help="the same pipeline on the CPU (for CI; no GPU needed)")
    p.add_argument("--deadline", type=float, default=plan.DEFAULT_DEADLINE_S,
                   help=f"seconds for the whole run, packing included (default {plan.DEFAULT_DEADLINE_S})")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT, else ./device_check_out)")
    p.add_argument("--work", type=Path, default=None, help="folder for logs before packing (default: a temp dir)")
    p.add_argument("--skip", default="", help=f"comma list of stages to leave out ({', '.join(plan.NAMES)})")
    p.add_argument("--tests", nargs="+", default=None, metavar="PATH", help="pytest selection (default: every tests/gpu file, the short ones first)")
    p.add_argument("--bench-dtypes", default="", help="comma list (default: bf16,fp16,fp32; rehearsal fp32,bf16)")
    p.add_argument("--commit", default=os.environ.get("FUSEDRNN_GIT_COMMIT", ""),
                   help="the commit being checked (the device copy has no .git); default $FUSEDRNN_GIT_COMMIT")
    args = p.parse_args(argv)
    skip = tuple(s for s in args.skip.split(",") if s)
    bad = [s for s in skip if s not in plan.NAMES]
    if bad:
        p.error(f"--skip: unknown stage(s) {bad}; stages are {', '.join(plan.NAMES)}")
    if not math.isfinite(args.deadline) or args.deadline <= plan.FINALIZE_S:  # nan would disable every budget
        p.error(f"--deadline must be a finite number of seconds more than {plan.FINALIZE_S}, got {args.deadline}")
    args.out = (args.out or Path(os.environ.get("OUT") or "device_check_out")).resolve()
    for path, what in ((args.out, "--out/$OUT"), (args.work, "--work")):
        why = writable_folder(path, what) if path is not None else None
        if why:
            p.error(why)
    return args, skip


def _console(log_path: Path):
    fh = open(log_path, "a", encoding="utf-8")

    def say(text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        line = f"{stamp} {text}"
        print(line, flush=True)
        fh.write(line + "\n")
        fh.flush()
    return say


def _git_commit(repo: Path) -> str:
    import subprocess  # noqa: PLC0415
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def write_outputs(ctx: Ctx, current: str | None, final: bool) -> None:
    (ctx.work / "device_check.json").write_text(json.dumps(ctx.as_json(), indent=1, default=str))
    tmp = ctx.out / "summary.md.part"
    tmp.write_text(summary.render(ctx, current, final))
    os.replace(tmp, ctx.out / "summary.md")
    left_out = pack.pack(ctx.work, ctx.out / "artifacts.tar.gz")
    if left_out and final:
        ctx.say(f"artifacts.tar.gz: left out to stay under the size limit: {', '.join(left_out)}")


def run(ctx: Ctx) -> int:
    def on_term(signum, frame):
        raise _Stop(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    ctx.say(f"device check{' (rehearsal on the CPU)' if ctx.rehearse else ''}: deadline {ctx.deadline_s:.0f}s, "
            f"out {ctx.out}, work {ctx.work}")
    try:
        for s in plan.STAGES:
            if s.name in ctx.skip:
                continue
            if ctx.aborted:
                break
            seconds = plan.budget(s.name, ctx.left(), ctx.rehearse, ctx.skip)
            if seconds < plan.MIN_STAGE_S:
                r = StageResult(s.name, status="not started: no time left", categories=["deadline"])
                ctx.results.append(r)
                ctx.say(f"== {s.name}: not started ({ctx.left():.0f}s left)")
                continue
            ctx.say(f"== {s.name} (up to {seconds:.0f}s; {ctx.left():.0f}s left): {s.what}")
            write_outputs(ctx, s.name, final=False)
            r = stages.RUNNERS[s.name](ctx, seconds)
            ctx.results.append(r)
            ctx.say(f"== {s.name}: {r.status} after {r.seconds:.0f}s; {r.counts}"
                    + (f"; first error: {r.first_error}" if r.first_error else ""))
            if "no_gpu" in r.categories or "build" in r.categories:
                ctx.aborted = f"{s.name} failed"
            write_outputs(ctx, None, final=False)
    except (_Stop, KeyboardInterrupt) as e:
        ctx.aborted = f"interrupted ({e or 'SIGINT'})"
        ctx.results.append(StageResult("interrupted", status=ctx.aborted, categories=["deadline"]))
    code = ctx.exit_code()
    write_outputs(ctx, None, final=True)
    ctx.say(f"exit code {code}: {CODE_MEANING[code]} ({ctx.elapsed():.0f}s)")
    print("\n" + (ctx.out / "summary.md").read_text(), flush=True)
    return code


def main(argv=None) -> int:
    try:
        args, skip = parse(argv)
    except SystemExit as e:
        return USAGE if e.code else 0
    repo = Path.cwd()
    out = args.out  # resolved and checked writable by parse
    work = (args.work or Path(tempfile.mkdtemp(prefix="fusedrnn-device-check-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(repo=repo, out=out, work=work, rehearse=args.rehearse, deadline_s=args.deadline, skip=skip,
              tests=tuple(args.tests or default_tests(repo)),
              bench_dtypes=tuple(d for d in args.bench_dtypes.split(",") if d),
              commit=args.commit or _git_commit(repo), say=_console(out / "device_check.log"))
    code = run(ctx)
    return code


if __name__ == "__main__":
    sys.exit(main())
