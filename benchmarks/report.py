"""The results as a terminal table, Markdown and JSON (same rows, same numbers)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from . import anchors


def fmt_ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def fmt_x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def fmt_tokens(v) -> str:
    if v is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.0f}"


def fmt_err(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str) or not math.isfinite(v):
        return str(v)
    return f"{v:.1e}"


def _status(row) -> str:
    s = row["status"]
    if s == "ok" and not row.get("note"):
        return "ok"
    return f"{s}: {row['note']}" if row.get("note") else s


def _gpu(meta: dict) -> bool:
    return meta.get("device_type") == "cuda"


def fmt_spread(r) -> str:
    """p25-p75 (iqr as % of the median): the spread a median is read with."""
    if r.get("p25_ms") is None:
        return "-"
    pct = r.get("iqr_pct")
    return f"{fmt_ms(r['p25_ms'])}-{fmt_ms(r['p75_ms'])}" + ("" if pct is None else f" ({pct:.0f}%)")


def _algo(r) -> str:
    if not r.get("cudnn_algo"):
        return ""
    tf32 = "" if r.get("tf32") is None else (", tf32 on" if r["tf32"] else ", tf32 off")
    return r["cudnn_algo"] + tf32


def columns(meta: dict):
    """GPU runs: times, spread, speedups, anchors, cuDNN's algorithm. CPU runs: times and
    their spread only (CPU timings are not representative: no speedup is derived)."""
    base, fp16 = meta.get("baseline", "cudnn"), meta.get("baseline_fp16")
    cols = [("case", lambda r: r["case"]), ("provider", lambda r: r["provider"]),
            ("median ms", lambda r: fmt_ms(r["median_ms"])),
            ("p25-p75 ms (IQR)", fmt_spread),
            ("min-max ms", lambda r: "-" if r["min_ms"] is None else f"{fmt_ms(r['min_ms'])}-{fmt_ms(r['max_ms'])}")]
    if _gpu(meta):
        cols += [("tokens/s", lambda r: fmt_tokens(r["tokens_per_s"])),
                 (f"vs {base}", lambda r: fmt_x(r["speedup_vs_baseline"]))]
        if fp16:
            cols.append((f"vs {fp16}", lambda r: fmt_x(r["speedup_vs_fp16"])))
        cols += [("vs anchor", lambda r: fmt_x(r["vs_anchor"])),
                 ("vs best anchor", lambda r: fmt_x(r["vs_best_anchor"])),
                 ("cuDNN algorithm", _algo)]
    cols += [("max rel err", lambda r: fmt_err(r["max_rel_err"])), ("status", _status)]
    return cols


def groups(rows):
    """Rows grouped by (section, dtype, mode), in first-seen order."""
    out: dict[tuple, list] = {}
    for r in rows:
        out.setdefault((r["section"], r["dtype"], r["mode"]), []).append(r)
    return out


def _group_title(section, dtype, mode) -> str:
    what = {"layer": "per layer", "variant": "cell variants (torch.nn rows: the standard cell)"}.get(section, "model level")
    how = "forward (no_grad)" if mode == "fw" else "forward + backward"
    return f"{what}, {dtype}, {mode}: {how}"


def _text_table(header, body) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def _md_table(header, body) -> str:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    return "\n".join(["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(map(esc, r)) + " |" for r in body)])


def summary_table(summary, meta):
    """Per provider: cases timed and wrong; on a GPU also the geometric-mean speedups."""
    base, fp16 = meta.get("baseline", "cudnn"), meta.get("baseline_fp16")
    header = ["section", "provider", "dtype", "mode", "timed/cases", "wrong"]
    if _gpu(meta):
        header.append(f"geomean vs {base}")
        if fp16:
            header.append(f"geomean vs {fp16}")
        header.append("geomean vs best anchor")
    body = []
    for s in summary:
        r = [s["section"], s["provider"], s["dtype"], s["mode"], f"{s['timed']}/{s['cases']}", s["wrong"]]
        if _gpu(meta):
            r.append(fmt_x(s["geomean_vs_baseline"]))
            if fp16:
                r.append(fmt_x(s["geomean_vs_fp16"]))
            r.append(fmt_x(s["geomean_vs_best_anchor"]))
        body.append(r)
    return header, body


def summary_text(summary, meta) -> str:
    return _text_table(*summary_table(summary, meta))


def _meta_lines(meta) -> list[str]:
    keys = ["card", "driver", "date", "torch", "torch_cuda", "cudnn", "triton", "python", "commit", "dirty", "timer",
            "warmup", "reps", "command"]
    return [f"{k}: {meta[k]}" for k in keys if k in meta]


CPU_NOTE = ("CPU timings (host timer): NOT representative of GPU performance. They are shown with their "
            "spread and never turned into speedups; the CPU run is a correctness check of every backend.")


def _notes(meta) -> list[str]:
    notes = ["max rel err: largest max|out-ref|/max|ref| over outputs, states (and parameter gradients for fwbw) "
             "against torch.nn in float64 on the same rounded weights and inputs (a cell variant torch.nn lacks: "
             "against fusedrnn's reference backend in float64); a provider over tolerance is marked WRONG and not "
             "timed.",
             "p25-p75 (IQR): the middle half of the repetitions; IQR as a percentage of the median."]
    if _gpu(meta):
        notes = [f"speedup = t({meta.get('baseline', 'cudnn')}) / t(provider), same case, dtype and mode; "
                 "geomean = geometric mean over cases; tokens/s = B*T / median (packed: sum of lengths; decode: "
                 "B per step)."] + notes
        notes.append("vs anchor / vs best anchor: the PUBLISHED cuDNN numbers of the anchor shapes "
                     f"(docs/anchors.md; not measured in this run) divided by this run's time; best = cuDNN's fastest "
                     f"published dtype. {anchors.SOURCE}.")
        notes.append("cuDNN algorithm: PyTorch's choice rule for the row (persistent kernels only under narrow "
                     "conditions); the kernels one profiled call launched are in the JSON (`kernels`). tf32: "
                     "torch.backends.cudnn.allow_tf32 for fp32 rows (on by default: the fp32 baseline users get).")
    else:
        notes.append(CPU_NOTE)
    return notes


def text(rows, summary, meta) -> str:
    cols = columns(meta)
    parts = [] if _gpu(meta) else [CPU_NOTE, ""]
    for (section, dtype, mode), grp in groups(rows).items():
        parts.append(f"== {_group_title(section, dtype, mode)} ==")
        parts.append(_text_table([c[0] for c in cols], [[f(r) for _, f in cols] for r in grp]))
        parts.append("")
    parts.append("== geometric-mean speedup per provider ==" if _gpu(meta) else "== cases per provider ==")
    parts.append(_text_table(*summary_table(summary, meta)))
    parts += ["", *_notes(meta)]
    return "\n".join(parts)


def markdown(rows, summary, meta, cases: bool = True, level: int = 1) -> str:
    """The whole record: header of versions, the geometric means (GPU) or case counts (CPU),
    then (cases=True) one table per section, dtype and mode, then notes. `level` is the
    title's heading level."""
    cols = columns(meta)
    title = "CPU run (timings not representative)" if not _gpu(meta) else meta.get("card", "")
    h = "#" * level
    parts = [f"{h} fusedrnn benchmarks: {title}, {meta.get('date', '')[:10]}", ""]
    parts += [f"- {line}" for line in _meta_lines(meta)] + [""]
    parts += [f"{h}# " + ("Geometric-mean speedup per provider" if _gpu(meta) else "Cases per provider"), "",
              _md_table(*summary_table(summary, meta)), ""]
    for (section, dtype, mode), grp in (groups(rows).items() if cases else ()):
        parts += [f"{h}# {_group_title(section, dtype, mode)}", "",
                  _md_table([c[0] for c in cols], [[f(r) for _, f in cols] for r in grp]), ""]
    parts += [f"{h}# Notes", ""] + [f"- {n}" for n in _notes(meta)]
    return "\n".join(parts) + "\n"


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def to_json(rows, summary, meta) -> str:
    return json.dumps(_jsonable({"meta": meta, "summary": summary, "rows": rows}), indent=1)


def write(out_dir: Path, rows, summary, meta) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "md": out_dir / "results.md"}
    paths["json"].write_text(to_json(rows, summary, meta) + "\n")
    paths["md"].write_text(markdown(rows, summary, meta))
    return paths
