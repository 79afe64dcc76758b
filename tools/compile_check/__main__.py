"""python -m tools.compile_check: compile every kernel the library would launch on
the target GPU (default H100, sm_90) and flag what would fail or spill there.

Exit status: 0 when no row is flagged FAIL, SMEM or CORES; 1 otherwise; 2 on bad usage.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from .cases import CELLS, DTYPES, TRITON_ONLY_CELLS, make_cases
from .rows import DEVICES, FATAL, SPILL, Row, apply_flags

BACKENDS = ("triton", "cuda")


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.compile_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="H100", choices=sorted(DEVICES),
                   help="target device whose limits the launches are planned and checked for (default: H100)")
    p.add_argument("--shapes", default="anchors", choices=("anchors", "ci", "sweep", "all"),
                   help="anchors: the five anchor (B, H); ci: anchors plus a few edge shapes; "
                        "sweep: B in {1..4096} x H in {1..2048}; all: anchors + sweep (default: anchors)")
    p.add_argument("--cells", default=",".join(CELLS + TRITON_ONLY_CELLS),
                   help="comma list (default: the five cells, gru_reset_before the GRU with its reset gate "
                        "before the product)")
    p.add_argument("--dtypes", default=",".join(DTYPES), help="comma list of bf16, fp16, fp32 (default: all)")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma list of triton, cuda (default: both)")
    p.add_argument("--sample", action="store_true",
                   help="one (cell, dtype) per shape, rotating through both, instead of every combination: "
                        "each shape, cell and dtype is still compiled (the default test run)")
    p.add_argument("--json", metavar="PATH", help="also write every row as JSON to PATH")
    p.add_argument("-j", "--jobs", type=int, default=0, help="parallel compile processes (default: CPU count)")
    p.add_argument("--quiet", action="store_true", help="print only flagged rows and the totals")
    args = p.parse_args(argv)
    for name, allowed in (("cells", CELLS + TRITON_ONLY_CELLS), ("dtypes", DTYPES), ("backends", BACKENDS)):
        vals = _split(getattr(args, name))
        bad = [v for v in vals if v not in allowed]
        if bad or not vals:
            p.error(f"--{name}: invalid {bad or 'empty list'} (choose from {', '.join(allowed)})")
        setattr(args, name, vals)
    return args


def backend_rows(backend: str, spec, cases, jobs) -> list[Row]:
    if backend == "triton":
        from . import triton_rows as mod
    else:
        from . import cuda_rows as mod
        cases = [c for c in cases if c.cell not in TRITON_ONLY_CELLS]
        if not cases:
            return []
    try:
        return list(mod.rows(spec, cases, jobs))
    except Exception as e:  # a broken enumerator is itself a gate failure, never a silent pass
        return [Row(backend, "<enumeration>", "-", "-", 0, 0, "-", "-", "-",
                    error=f"{type(e).__name__}: {e}")]


def fmt_bytes(n) -> str:
    if n is None:
        return "?"
    return f"{n / 1024:.1f}K" if n >= 1024 else str(n)


def table(rows: list[Row]) -> str:
    head = ("backend", "kernel", "cell", "dtype", "B", "H", "dir", "variant", "layout", "grid", "thr",
            "regs", "spill", "smem", "tc", "/SM", "rt", "bar", "insts", "us/step", "flags")
    lines = [head]
    for r in rows:
        lines.append((r.backend, r.kernel, r.cell, r.dtype, str(r.B), str(r.H), r.direction, r.variant,
                      r.layout, "x".join(map(str, r.grid)) or "-", str(r.threads or "-"),
                      "?" if r.regs is None else str(r.regs), fmt_bytes(r.spill_bytes), fmt_bytes(r.smem),
                      r.tensor_cores or "-", "?" if r.per_sm is None else str(r.per_sm),
                      *("-" if v is None else str(v) for v in (r.round_trips, r.barriers, r.insts_per_step)),
                      "-" if r.predicted_us is None else f"{r.predicted_us:.2f}",
                      " ".join(r.flags) + (f" ({r.error.splitlines()[0][:80]})" if r.error else "")))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    spec = DEVICES[args.arch]
    cases = make_cases(args.shapes, args.cells, args.dtypes, args.sample)
    jobs = args.jobs or None
    t0 = time.time()
    rows: list[Row] = []
    for backend in args.backends:
        rows += [apply_flags(r, spec) for r in backend_rows(backend, spec, cases, jobs)]
    shown = [r for r in rows if r.flags] if args.quiet else rows
    if shown:
        print(table(shown))
    fatal = [r for r in rows if any(f in FATAL for f in r.flags)]
    spills = [r for r in rows if SPILL in r.flags]
    anchor_spills_16 = [r for r in spills if r.anchor and r.dtype in ("bf16", "fp16")]
    print(f"\n{len(rows)} kernels for {spec.name} (sm_{spec.arch}) in {time.time() - t0:.0f}s: "
          f"{len(fatal)} FAIL/SMEM/CORES, {len(spills)} spilling "
          f"({len(anchor_spills_16)} of them 16-bit at an anchor)")
    from fusedrnn import machine

    from .anchor_verdict import verdict_lines
    for line in verdict_lines(rows, machine.load()):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": spec.__dict__, "shapes": args.shapes, "sample": args.sample, "rows": [r.as_dict() for r in rows]}, f,
                      indent=1)
    return 1 if fatal else 0


if __name__ == "__main__":
    sys.exit(main())
