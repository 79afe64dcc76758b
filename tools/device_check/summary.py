"""summary.md: what a (possibly cut-off) device check learned, rewritten after every stage.
Stages, then every kernel's verdict, the failing tests with their triage, the benchmark's
geometric means (speedups only from GPU timings that passed their check)."""
from __future__ import annotations

import datetime as _dt

from . import plan, triton_cache
from .context import CODE_MEANING, Ctx

#: what a second call passes to redo one stage: every other stage but env and load skipped
_RESUME_EXTRA = {"tests": "--tests <the files junit.xml shows unfinished>",
                 "bench": "--bench-dtypes <the dtypes without results>"}


def _md(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _table(header, rows) -> list[str]:
    return [_md(header), "|" + "---|" * len(header), *(_md(r) for r in rows)]


def _where(ctx: Ctx) -> str:
    info = ctx.env_info
    if info.get("cuda"):
        return f"{info.get('card')} (sm_{str(info.get('capability', '?')).replace('.', '')}, {info.get('sms')} SMs)"
    return "CPU rehearsal (no GPU: Triton interpreter, reference and torch providers, no sanitizer)" \
        if ctx.rehearse else "no CUDA device"


def _stages(ctx: Ctx, current: str | None) -> list[str]:
    done = {r.name: r for r in ctx.results}
    rows = []
    for s in plan.STAGES:
        r = done.get(s.name)
        if r is None:
            status = "running" if s.name == current else ("skipped (--skip)" if s.name in ctx.skip else
                                                          (f"not run: {ctx.aborted}" if ctx.aborted else "pending"))
            rows.append([s.name, status, "", "", ""])
        else:
            rows.append([r.name, r.status, f"{r.seconds:.0f}", r.counts, r.first_error])
    return _table(["stage", "status", "s", "counts", "first error"], rows)


def _cut(ctx: Ctx) -> list[str]:
    """Every stage that was cut short or not started, with the command that does it alone."""
    done = {r.name: r for r in ctx.results}
    cut = [s.name for s in plan.STAGES if s.name in done and (
        "deadline" in done[s.name].categories or done[s.name].status.startswith(("cut", "not started", "TIMED OUT")))]
    if ctx.aborted and not ctx.aborted.endswith("failed"):
        cut += [s.name for s in plan.STAGES if s.name not in done and s.name not in ctx.skip]
    if not cut:
        return []
    out = ["", "## Cut short: a second call", "",
           "Each with the window's remaining time (the env and load stages run again, about 35 s):", ""]
    for name in cut:
        others = [n for n in plan.NAMES if n not in ("env", "load", name)]
        extra = _RESUME_EXTRA.get(name, "")
        out.append(f"- {name}: `FUSEDRNN_GIT_COMMIT={ctx.commit or '<sha>'} bash benchmarks/device_check.sh "
                   f"{'--rehearse ' if ctx.rehearse else ''}--skip {','.join(others)}{' ' + extra if extra else ''}`")
    return out


def _cache_line(ctx: Ctx) -> list[str]:
    info = ctx.triton_cache
    if not info:
        return []
    if info.get("note"):
        return [f"- Triton cache: {info['entries_before']} kernels carried; {info['note']}"]
    t = triton_cache.tally(ctx.work / "triton_cache_lookups.log")
    why = f" ({info['why_misses']})" if info.get("why_misses") else ""
    return [f"- Triton cache: {info['entries_before']} kernels carried{why}; kernel lookups: {t['hit']} hits, "
            f"{t['miss']} misses (compiled here); launchers (built per Python): {t['launcher_hit']} reused, "
            f"{t['launcher_miss']} built"]


def _kernels(ctx: Ctx) -> list[str]:
    if not ctx.smoke and not ctx.memcheck:
        return []
    mem = {m["id"]: m for m in ctx.memcheck}
    rows = []
    for k in ctx.smoke or ctx.memcheck:
        errs = " ".join(f"{d} {e:.1e}" for d, e in (k.get("errors") or {}).items() if isinstance(e, float))
        fwd = (k.get("plan") or {}).get("fwd")
        plan_s = ", ".join(f"{a}={b}" for a, b in list(fwd.items())[:5]) if isinstance(fwd, dict) else (fwd or "")
        m = mem.get(k["id"])
        mem_s = ("-" if ctx.rehearse else "not run") if m is None else \
            (m["status"] if m["status"] != "ok" else f"clean ({m.get('sanitizer_errors', 0)} errors)")
        rows.append([k["id"], k["status"] if k in ctx.smoke else "-", errs, mem_s,
                     (k.get("detail") or "").strip() + (" " if k.get("detail") else "") + str(plan_s)[:160]])
    return ["", "## Kernels", "", "One tiny forward + backward each (T = 5, each tier's B and H; lengths, reverse, both "
            "directions in one call, the LSTM projection), against the float64 reference; memcheck: the same call under compute-sanitizer.", "",
            *_table(["kernel", "smoke", "max rel err", "memcheck", "detail / the backend's plan"], rows)]


def _tests(ctx: Ctx) -> list[str]:
    if ctx.junit is None:
        return []
    j = ctx.junit
    out = ["", "## Tests", "",
           f"{j['passed']} passed, {j['failed']} failed, {j['errors']} errors, {j['skipped']} skipped "
           f"(of {j['tests']}; from {'junit.xml' if j['source'] == 'junit' else 'the -v log: pytest wrote no junit'})."]
    if ctx.failures:
        tri = {t["nodeid"]: t["result"] for t in ctx.triage}
        rows = [[f["nodeid"], f["kind"], f["message"][:200], tri.get(f["nodeid"], "")] for f in ctx.failures[:40]]
        out += ["", *_table(["test", "kind", "message", "alone / memcheck"], rows)]
        if len(ctx.failures) > 40:
            out.append(f"\n... and {len(ctx.failures) - 40} more (junit.xml).")
    return out


def _fmt_x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _bench(ctx: Ctx) -> list[str]:
    if not ctx.bench:
        return []
    out = ["", "## Benchmark", ""]
    rows = []
    cpu = False
    for dt, b in ctx.bench.items():
        base = b["meta"].get("baseline")
        cpu = cpu or b["meta"].get("device_type") != "cuda"
        for s in b["summary"]:
            if s["provider"] == base:
                continue
            rows.append([s["section"], dt, s["mode"], s["provider"], f"{s['timed']}/{s['cases']}", s["wrong"],
                         _fmt_x(s.get("geomean_vs_baseline")), _fmt_x(s.get("geomean_vs_fp16")),
                         _fmt_x(s.get("geomean_vs_best_anchor"))])
    if cpu:
        out.append("CPU timings (rehearsal): not representative of GPU performance; no speedups are derived "
                   "from them. Per dtype: rows checked against the float64 reference and timed, with their spread, "
                   "in the results JSON.")
        rows = [[r[0], r[1], r[2], r[3], r[4], r[5]] for r in rows]
        out += ["", *_table(["section", "dtype", "mode", "provider", "timed/cases", "wrong"], rows)]
    else:
        out.append("Geometric means over cases of t(cuDNN) / t(provider); a row that failed its float64 check is "
                   "WRONG, not timed, never a speedup. Per-case rows, spreads and cuDNN's algorithm: results-<dtype>.json.")
        out += ["", *_table(["section", "dtype", "mode", "provider", "timed/cases", "wrong", "vs cudnn",
                             "vs cudnn-fp16", "vs best published anchor"], rows)]
    return out


def render(ctx: Ctx, current: str | None = None, final: bool = False) -> str:
    code = ctx.exit_code()
    state = f"exit code {code}: {CODE_MEANING[code]}" if final else f"in progress (stage: {current})"
    head = [f"# fusedrnn device check: {state}", "",
            f"- where: {_where(ctx)}",
            f"- time: {ctx.elapsed():.0f} s of the {ctx.deadline_s:.0f} s deadline; "
            f"written {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}",
            f"- commit: {ctx.commit or 'unknown (pass --commit or FUSEDRNN_GIT_COMMIT)'}",
            *_cache_line(ctx), "", "## Stages", ""]
    body = _stages(ctx, current) + _cut(ctx) + _kernels(ctx) + _tests(ctx) + _bench(ctx)
    tail = ["", "## Files", "",
            "`summary.md` (this), `junit.xml`, `results-<dtype>.json` (benchmark rows), `calibration.json` (the "
            "machine model's constants), `device_check.log` (the console), `artifacts.tar.gz` (env/, load/, "
            "calibrate/, smoke/, memcheck/, tests/, "
            "bench/, triage/ logs and device_check.json). File them with `python -m benchmarks.record <folder>`.",
            "", "Exit codes: " + "; ".join(f"{c} {m}" for c, m in sorted(CODE_MEANING.items())) + "."]
    return "\n".join(head + body + tail) + "\n"
