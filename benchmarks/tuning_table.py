"""`python -m benchmarks.tuning_table`: build the per-card dispatch tables that `backend="auto"`
follows (fusedrnn/tuning/<card>.json, format: fusedrnn/tuning/__init__.py) from the GPU runs
recorded under benchmarks/results/. `python -m benchmarks.record` rebuilds the table of the
card it files a run for.

What counts: timed rows whose verdict passed ("baseline" for torch.nn, "ok" for a fused
provider: its own float64 check passed and no failing test touches its backend, cell and
dtype) of the providers cudnn (-> "torch", torch.nn in the run's dtype), fusedrnn-cuda and
fusedrnn-triton; graph-captured decode rows are left out (a captured graph runs the same
backend at another calling cost, which the choice made inside it does not change). Where
several runs of a card measured the same case, the newest counts.

Ranking: the rows of one shape class (cell, dtype, mode, kind, batch class, hidden class;
see fusedrnn.tuning) are grouped by measured shape; a fused backend competes only if it was
timed and verified on every shape of the class, and ranks by the geometric mean over them of
its time divided by torch.nn's; torch.nn counts 1.0 and wins ties, so "auto" never picks a
backend that was not measured faster.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from . import latest

PROVIDER_BACKENDS = {"cudnn": "torch", "fusedrnn-cuda": "cuda", "fusedrnn-triton": "triton"}
TUNING_DIR = Path("fusedrnn") / "tuning"


def _tuning():
    from fusedrnn import tuning  # noqa: PLC0415  (after benchmarks.run settled TRITON_INTERPRET)
    return tuning


def backend_of(row: dict) -> str | None:
    """The backend a row measures, or None if it does not count for the table."""
    backend = PROVIDER_BACKENDS.get(row.get("provider"))
    if backend is None or row.get("graph") or row.get("median_ms") is None or \
            any(row.get(k) is None for k in ("case", "cell", "dtype", "mode", "B", "T", "H")):
        return None
    if (row.get("provider_dtype") or row["dtype"]) != row["dtype"]:
        return None
    return backend if row.get("verdict") == ("baseline" if backend == "torch" else "ok") else None


def class_key(row: dict) -> tuple:
    t = _tuning()
    kind = "step" if row.get("decode") or row["T"] == 1 else "sequence"
    return row["cell"], row["dtype"], row["mode"], kind, t.batch_class(row["B"]), t.hidden_class(row["H"])


def entries(rows) -> list[dict]:
    """The table's entries from benchmark rows (newest first where a case repeats)."""
    times: dict[tuple, dict[str, dict[str, float]]] = {}
    for row in rows:
        backend = backend_of(row)
        if backend is None:
            continue
        shapes = times.setdefault(class_key(row), {})
        shapes.setdefault(row["case"], {}).setdefault(backend, float(row["median_ms"]))
    out = []
    for key, shapes in sorted(times.items()):
        measured = {case: ms for case, ms in shapes.items() if "torch" in ms}
        if not measured:
            continue  # no torch.nn time to compare with
        ratio = {"torch": 1.0}
        for backend in ("cuda", "triton"):
            if all(backend in ms for ms in measured.values()):
                ratio[backend] = math.exp(sum(math.log(ms[backend] / ms["torch"]) for ms in measured.values())
                                          / len(measured))
        ranking = sorted(ratio, key=lambda b: (ratio[b], b != "torch"))
        cell, dtype, mode, kind, bc, hc = key
        out.append({"cell": cell, "dtype": dtype, "mode": mode, "kind": kind, "batch_class": bc,
                    "hidden_class": hc, "class": _tuning().class_label(kind, bc, hc), "ranking": ranking,
                    "ratio_to_torch": {b: round(r, 4) for b, r in ratio.items()},
                    "measured": [{"case": c, "ms": ms} for c, ms in sorted(measured.items())]})
    return out


def build(rows, card: str, sources: list[str]) -> dict:
    t = _tuning()
    return {"format": t.FORMAT, "card": card, "source": ", ".join(sources),
            "batch_edges": list(t.BATCH_EDGES), "hidden_edges": list(t.HIDDEN_EDGES),
            "rule": "fastest verified backend per shape class (benchmarks/tuning_table.py)",
            "entries": entries(rows)}


def runs_by_card(results: Path) -> dict[str, list[Path]]:
    """Each card's recorded GPU runs (results.json), newest first."""
    out: dict[str, list[Path]] = {}
    for _, folder in reversed(latest.runs(results)):
        card = json.loads((folder / "results.json").read_text())["meta"].get("card")
        if card:
            out.setdefault(card, []).append(folder / "results.json")
    return out


def write_card(repo: Path, card: str, files: list[Path]) -> Path | None:
    """Write fusedrnn/tuning/<card>.json from `files` (newest first); None if nothing counted."""
    rows = [r for f in files for r in json.loads(f.read_text())["rows"]]
    table = build(rows, card, [str(f.parent.relative_to(repo)) if f.is_relative_to(repo) else str(f.parent)
                               for f in files])
    if not table["entries"]:
        return None
    dest = repo / TUNING_DIR / f"{_tuning().card_slug(card)}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(table, indent=1) + "\n")
    return dest


def rebuild(repo: Path, card: str | None = None) -> list[Path]:
    """Rebuild the table of `card` (every card recorded, if None); the files written."""
    written = []
    for name, files in runs_by_card(repo / latest.RESULTS).items():
        if card is None or name == card:
            path = write_card(repo, name, files)
            if path is not None:
                written.append(path)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tuning_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=Path.cwd(), help="the repository root (default: here)")
    p.add_argument("--card", help="only this card (its name as recorded, e.g. 'NVIDIA H100 80GB HBM3')")
    args = p.parse_args(argv)
    written = rebuild(args.repo, args.card)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("no recorded GPU run has rows that count: no table written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
