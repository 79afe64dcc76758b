"""`python -m benchmarks.record DIR`: file what a device check brought back (DIR: its $OUT
folder, fetched) under benchmarks/results/<date>-<card>/ and regenerate the results block
of README.md (between its marker comments) from the newest GPU record.

The record holds results.json (every benchmark row of every dtype, each with its
`verdict`: a fused row counts only if its own check passed and no failing test, smoke
kernel or memcheck run touches its backend, cell and dtype), results.md, speedup.png
(with matplotlib), and the device check's summary.md, junit.xml, device_check.log and
calibration.json (the machine model's constants measured on that GPU; fusedrnn/machine.py reads it); then
rebuilds that card's dispatch table fusedrnn/tuning/<card>.json (benchmarks/tuning_table.py),
which `backend="auto"` follows on that card.
Run it from the repository root (or give --repo).

Exit codes: 0 filed; 2 bad usage (argparse's: no README.md, a folder with no results, a CPU run
without --allow-cpu); 3 a malformed folder (a results file that is not JSON or lacks its meta or
rows, a row missing a field, a date that is not ISO YYYY-MM-DD, a broken junit.xml), reported
in one line before anything is written."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
from pathlib import Path

from . import latest, meta as M, plot, readme_block, record_input, report, stats, tuning_table, verdicts


def _device_state(src: Path) -> dict:
    """device_check.json from artifacts.tar.gz, or {} if it is not there (or not an object)."""
    try:
        with tarfile.open(src / "artifacts.tar.gz") as tar:
            fh = tar.extractfile("device_check.json")
            state = json.loads(fh.read()) if fh else {}
    except (OSError, KeyError, tarfile.TarError, ValueError, RecursionError):
        return {}
    return state if isinstance(state, dict) else {}


def failures(src: Path, state: dict) -> list[tuple[str, str]]:
    """(id, why) of every failing test, smoke kernel and memcheck run of the check."""
    out = []
    if (src / "junit.xml").exists():
        out += [(f.nodeid, f"{f.kind}: {f.message}") for f in record_input.junit_failures(src / "junit.xml")]
    for part in ("smoke", "memcheck"):
        out += [(str(k.get("id")), f"{part} {k.get('status')}") for k in record_input.objects(state.get(part))
                if k.get("status") not in ("ok", "skipped")]
    return out


def load(src: Path) -> tuple[dict, list[dict], dict]:
    """(meta, rows of every dtype, device-check state) of a fetched folder."""
    files = sorted(src.glob("results-*.json")) or sorted(src.glob("results.json"))
    if not files:
        raise FileNotFoundError(f"{src} holds no results-<dtype>.json")
    rows, metas = [], []
    for f in files:
        meta, file_rows = record_input.read_results(f)
        rows += file_rows
        metas.append(meta)
    meta = dict(metas[0])
    meta["dtypes"] = [d for m in metas for d in m.get("dtypes", [])]
    meta["commands"] = [m.get("command") for m in metas]
    state = _device_state(src)
    if state:
        meta["device_check"] = {"exit_code": state.get("exit_code"), "meaning": state.get("exit_meaning"),
                                "junit": state.get("junit"), "commit": state.get("commit"),
                                "stages": [{k: s.get(k) for k in ("name", "status", "seconds", "counts")}
                                           for s in record_input.objects(state.get("stages"))]}
        if state.get("commit") and meta.get("commit") in (None, "unknown"):
            meta["commit"] = state["commit"]
    return meta, rows, state


def file_run(src: Path, repo: Path, allow_cpu: bool = False) -> Path:
    meta, rows, state = load(src)
    if meta.get("device_type") != "cuda" and not allow_cpu:
        raise ValueError("this is a CPU run (a rehearsal): its timings are not measurements to record "
                         "(--allow-cpu files it anyway; it never enters the README's table)")
    verdicts.apply(rows, verdicts.taints(failures(src, state)))
    summary = stats.summary(rows)
    try:
        dest = M.default_out_dir(meta, repo / latest.RESULTS)
    except ValueError as e:  # a date or card that would place it elsewhere
        raise record_input.Malformed(str(e)) from None
    dest.mkdir(parents=True)
    report.write(dest, rows, summary, meta)
    for name in ("summary.md", "junit.xml", "device_check.log", "calibration.json"):
        if (src / name).exists():
            shutil.copyfile(src / name, dest / name)
    plot.maybe_plot(rows, meta, dest / "speedup.png")
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.record", description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, metavar="DIR", help="the device check's fetched $OUT folder")
    p.add_argument("--repo", type=Path, default=Path.cwd(), help="the repository root (default: here)")
    p.add_argument("--allow-cpu", action="store_true", help="file a CPU rehearsal too (tests)")
    p.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    p.add_argument("--no-tuning", action="store_true",
                   help="leave the card's dispatch table (fusedrnn/tuning/<card>.json) alone")
    args = p.parse_args(argv)
    if not (args.repo / "README.md").is_file():
        p.error(f"{args.repo} has no README.md: run from the repository root or give --repo")
    try:
        dest = file_run(args.src, args.repo, args.allow_cpu)
    except record_input.Malformed as e:
        print(f"{p.prog}: error: {args.src} cannot be filed: {e}", file=sys.stderr)
        return record_input.MALFORMED
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    print(f"filed under {dest}")
    if not args.no_tuning:
        card = json.loads((dest / "results.json").read_text())["meta"].get("card")
        written = tuning_table.rebuild(args.repo, card)
        print(f"dispatch table: {written[0]}" if written else
              "dispatch table: unchanged (no verified GPU timings of this card)")
    if not args.no_readme:
        readme_block.update(args.repo / "README.md", args.repo / latest.RESULTS, args.repo)
        print(f"regenerated the results block of {args.repo / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
