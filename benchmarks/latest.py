"""`python -m benchmarks.latest`: the newest recorded GPU run of benchmarks/results/ as
Markdown (for the README). `--import DIR` files a results folder fetched from the device
machine under benchmarks/results/<card>-<date>/ (named from its results.json)."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from . import meta as M
from . import report

RESULTS = Path(__file__).resolve().parent / "results"


def runs(root: Path = RESULTS) -> list[tuple[str, Path]]:
    """(date, folder) of every recorded run with a results.json, oldest first; CPU runs
    (benchmarks/results/local/) are not records and are left out."""
    out = []
    for path in root.glob("*/results.json"):
        try:
            date = json.loads(path.read_text())["meta"]["date"]
        except (OSError, ValueError, KeyError):
            continue
        out.append((date, path.parent))
    return sorted(out)


def latest_markdown(root: Path = RESULTS, cases: bool = True, level: int = 1) -> str:
    """The newest run's record as Markdown (regenerated from its JSON: summary, and with
    cases=True every per-case table), or a line saying that no run is recorded yet."""
    found = runs(root)
    if not found:
        return "_No GPU benchmark run is recorded in benchmarks/results/ yet._\n"
    folder = found[-1][1]
    data = json.loads((folder / "results.json").read_text())
    md = report.markdown(data["rows"], data["summary"], data["meta"], cases=cases, level=level)
    return md + f"\n_From `{folder.name}/results.json`._\n"


def import_run(src: Path, root: Path = RESULTS) -> Path:
    """Copy results.json/.md/speedup.png (and any *.log) of `src` to root/<card>-<date>[-time]/."""
    meta = json.loads((src / "results.json").read_text())["meta"]
    dest = M.default_out_dir(meta, root)
    dest.mkdir(parents=True, exist_ok=False)
    for f in src.iterdir():
        if f.is_file() and (f.name in ("results.json", "results.md", "speedup.png") or f.suffix in (".log", ".txt")):
            shutil.copy2(f, dest / f.name)
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latest", description=__doc__)
    p.add_argument("--import", dest="src", type=Path, metavar="DIR",
                   help="file a fetched results folder under benchmarks/results/ first")
    p.add_argument("--summary", action="store_true", help="only the geometric means, not every case")
    p.add_argument("--level", type=int, default=1, choices=range(1, 5), help="heading level of the title")
    p.add_argument("--root", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.src is not None:
        if not (args.src / "results.json").is_file():
            p.error(f"{args.src} holds no results.json")
        print(f"filed under {import_run(args.src, args.root)}", file=sys.stderr)
    sys.stdout.write(latest_markdown(args.root, cases=not args.summary, level=args.level))
    return 0


if __name__ == "__main__":
    sys.exit(main())
