"""`python -m benchmarks.latest`: the newest recorded GPU run under benchmarks/results/ (of
the working directory, or --root) as Markdown. Runs are filed there by
`python -m benchmarks.record`; CPU runs are never records."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import report

RESULTS = Path("benchmarks") / "results"


def runs(root: Path = RESULTS) -> list[tuple[str, Path]]:
    """(date, folder) of every recorded GPU run with a results.json, oldest first."""
    out = []
    for path in Path(root).glob("*/results.json"):
        try:
            m = json.loads(path.read_text())["meta"]
        except (OSError, ValueError, KeyError):
            continue
        if m.get("device_type") == "cuda":
            out.append((m["date"], path.parent))
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latest", description=__doc__.splitlines()[0])
    p.add_argument("--summary", action="store_true", help="only the geometric means, not every case")
    p.add_argument("--level", type=int, default=1, choices=range(1, 5), help="heading level of the title")
    p.add_argument("--root", type=Path, default=RESULTS, help="the records' folder (default: benchmarks/results)")
    args = p.parse_args(argv)
    sys.stdout.write(latest_markdown(args.root, cases=not args.summary, level=args.level))
    return 0


if __name__ == "__main__":
    sys.exit(main())
