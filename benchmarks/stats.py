"""The arithmetic of the report: summaries of repeated timings, tokens/s, speedups and
their geometric means. Pure functions on plain numbers and row dicts (unit-tested)."""
from __future__ import annotations

import math
import statistics


def summarize(times_ms) -> dict:
    """median, min, max, n and the spread of a list of timings in milliseconds: the
    quartiles p25/p75 and iqr_pct = (p75 - p25) / median in percent."""
    times = [float(t) for t in times_ms]
    if not times:
        raise ValueError("no timings to summarize")
    med = statistics.median(times)
    p25, p75 = (statistics.quantiles(times, n=4, method="inclusive")[::2] if len(times) > 1 else (times[0], times[0]))
    return {"median_ms": med, "min_ms": min(times), "max_ms": max(times), "n": len(times),
            "p25_ms": p25, "p75_ms": p75, "iqr_pct": 100.0 * (p75 - p25) / med if med > 0 else None}


def tokens_per_s(tokens: int, ms: float | None) -> float | None:
    """Tokens per second for `tokens` processed in `ms` milliseconds (B*T / time)."""
    if ms is None or ms <= 0:
        return None
    return tokens / (ms / 1e3)


def speedup(t_baseline_ms: float | None, t_ms: float | None) -> float | None:
    """t_baseline / t: above 1 means faster than the baseline; None if either is missing."""
    if t_baseline_ms is None or t_ms is None or t_ms <= 0 or t_baseline_ms <= 0:
        return None
    return t_baseline_ms / t_ms


def geomean(values) -> float | None:
    """Geometric mean of the positive values given (None if there are none)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    if any(v <= 0 or math.isnan(v) for v in vals):
        raise ValueError(f"geometric mean needs positive numbers, got {vals}")
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def _key(row: dict) -> tuple:
    return row["section"], row["case"], row["dtype"], row["mode"]


def attach_speedups(rows: list[dict], baseline: str = "cudnn", baseline_fp16: str | None = "cudnn-fp16",
                    fp16_dtype: str = "fp16", comparable: bool = True) -> list[dict]:
    """Fill each row's speedup_vs_baseline (t_baseline / t) and speedup_vs_fp16 (t of the
    fp16 baseline / t) from the timed rows of the same case, dtype and mode. Where the run's
    dtype is the fp16 baseline's own (`fp16_dtype`) the baseline itself is the fp16 baseline.
    comparable=False (CPU timings): every speedup is None. Rows are changed in place."""
    times = {}
    for row in rows:
        times[_key(row) + (row["provider"],)] = row.get("median_ms")
    for row in rows:
        if not comparable:
            row.update(speedup_vs_baseline=None, speedup_vs_fp16=None, vs_anchor=None, vs_best_anchor=None)
            continue
        k = _key(row)
        t_base = times.get(k + (baseline,))
        t_fp16 = None
        if baseline_fp16 is not None:
            t_fp16 = t_base if row["dtype"] == fp16_dtype else times.get(k + (baseline_fp16,))
        row["speedup_vs_baseline"] = speedup(t_base, row.get("median_ms"))
        row["speedup_vs_fp16"] = speedup(t_fp16, row.get("median_ms"))
        row["vs_anchor"] = speedup(row.get("anchor_ms"), row.get("median_ms"))
        row["vs_best_anchor"] = speedup(row.get("best_anchor_ms"), row.get("median_ms"))
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per section, provider, dtype and mode: geometric means over cases of the speedups,
    and how many cases were timed, wrong or could not run."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["section"], row["provider"], row["dtype"], row["mode"]), []).append(row)
    out = []
    for (section, provider, dtype, mode), grp in groups.items():
        out.append({
            "section": section, "provider": provider, "dtype": dtype, "mode": mode,
            "cases": len(grp),
            "timed": sum(r.get("median_ms") is not None for r in grp),
            "wrong": sum(r["status"] == "WRONG" for r in grp),
            "unverified": sum(str(r.get("verdict", "")).startswith("unverified") for r in grp),
            "not_run": sum(r["status"] not in ("ok", "WRONG") for r in grp),
            "geomean_vs_baseline": geomean(r.get("speedup_vs_baseline") for r in grp),
            "geomean_vs_fp16": geomean(r.get("speedup_vs_fp16") for r in grp),
            "geomean_vs_best_anchor": geomean(r.get("vs_best_anchor") for r in grp),
        })
    return out
