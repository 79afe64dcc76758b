"""`python -m benchmarks.run` (in the repository) / `fusedrnn-bench` (installed): fusedrnn
against cuDNN.

On a GPU: every provider timed with CUDA events at the anchor shapes (docs/anchors.md) or
--shapes, after a correctness check against torch.nn in float64, plus the model-level
cases. Without one: says so on its first line and runs the CPU default (cpu_default.py):
a correctness check of every backend, with CPU timings that are labelled as not
representative and never turned into speedups. Writes results.json and results.md (and,
on a GPU with matplotlib installed, speedup.png) under --out, by default a new folder
under ./fusedrnn-bench/ in the working directory. Exit code 1 if any fused provider was
WRONG, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from . import cpu_default, shapes as S  # neither imports fusedrnn or triton
from .providers import CPU_DEFAULT, GPU_DEFAULT, PROVIDERS


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _non_negative(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_prog(),
        description="Benchmark fusedrnn's fused LSTM/GRU/RNN against cuDNN (torch.nn). Without a GPU: "
                    "the CPU default (correctness of every backend + CPU timings).",
        epilog="Lists take commas or spaces: --cells lstm,gru  --modes fw fwbw  --shapes 1,1024,256 8,512,128")
    p.add_argument("--shapes", nargs="+", type=S.parse_shape, metavar="B,T,H",
                   help="layer shapes (input size = H); default: the anchor shapes (docs/anchors.md)")
    p.add_argument("--cells", nargs="+", type=S.parse_choice_list(S.CELLS), metavar="CELL",
                   help=f"cells ({', '.join(S.CELLS)}); default: {','.join(S.DEFAULT_CELLS)}")
    p.add_argument("--dtypes", nargs="+", type=S.parse_choice_list(S.DTYPES, S.DTYPE_ALIASES), metavar="DTYPE",
                   help="fp32, bf16, fp16; default: all three on a GPU, fp32 on the CPU")
    p.add_argument("--modes", nargs="+", type=S.parse_choice_list(S.MODES), metavar="MODE",
                   help="fw (forward under no_grad), fwbw (forward + y.sum().backward()); default: both")
    p.add_argument("--layers", type=_positive, default=1, help="layers of the per-layer cases (default 1)")
    p.add_argument("--bidirectional", action="store_true", help="bidirectional per-layer cases")
    p.add_argument("--cases", nargs="+", type=S.parse_choice_list(("layer", "encoder", "decode", "variant")),
                   metavar="WHICH", help="layer, encoder, decode, variant (fusedrnn's cells torch.nn lacks; "
                                         "default: all)")
    p.add_argument("--providers", nargs="+", type=S.parse_choice_list(tuple(PROVIDERS)), metavar="NAME",
                   help=f"providers ({', '.join(PROVIDERS)}); default on a GPU: {','.join(GPU_DEFAULT)}; "
                        "the baseline is always added")
    p.add_argument("--eager", action="store_true", help="also time a Python loop of nn.*Cell (1 layer, 1 direction)")
    p.add_argument("--eager-max-t", type=_non_negative, default=256,
                   help="skip the eager loop above this T (default 256; 0 = no limit)")
    p.add_argument("--warmup", type=_non_negative, help="untimed calls per provider first (default 3; CPU 1)")
    p.add_argument("--reps", type=_positive, help="timed calls per provider (default 20; CPU 5)")
    p.add_argument("--time-limit", type=_seconds, metavar="SECONDS",
                   help="start no new case after this long; the rest is recorded as skipped")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs (default 0)")
    p.add_argument("--out", type=Path, help="output folder (default: ./fusedrnn-bench/<date>-<card>/ in the "
                                            "working directory, a time suffix if it exists)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (drawn only for GPU runs, with matplotlib)")
    p.add_argument("--progress", choices=("bar", "lines", "none"), default="bar",
                   help="bar (tqdm, if installed), lines (one line per case, for logs) or none (default bar)")
    p.add_argument("--no-progress", action="store_true", help="the same as --progress none")
    p.add_argument("--cpu", action="store_true", help="run the CPU default even when a GPU is present")
    return p


def _prog() -> str:
    """How this suite was started: `fusedrnn-bench` when installed, else `python -m <package>.run`."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.startswith("fusedrnn-bench") else f"python -m {__package__}.run"


def _progress(total: int, enabled: bool):
    if enabled:
        try:
            from tqdm import tqdm  # noqa: PLC0415
            return tqdm(total=total, desc="benchmarks", unit="item", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            pass

    class _Quiet:
        def update(self, n=1):
            pass

        def close(self):
            pass
    return _Quiet()


def progress_lines(total: int):
    """on_progress for run_all: one line per (case, dtype) with each provider's median or verdict."""
    import time  # noqa: PLC0415
    state = {"done": 0, "t0": time.monotonic()}

    def on_progress(case, dtype, rows) -> None:
        state["done"] += 1
        parts = []
        for r in rows:
            what = f"{r['median_ms']:.3f}ms" if r.get("median_ms") is not None else r["status"]
            parts.append(f"{r['provider']} {r['mode']} {what}")
        print(f"[{state['done']}/{total} {time.monotonic() - state['t0']:.0f}s] {case.label} {dtype}: "
              + "; ".join(parts), flush=True)
    return on_progress


def configure(args, on_gpu: bool) -> SimpleNamespace:
    """What to run, from the parsed arguments: device, dtypes, modes, providers, plan
    ((case, timed, providers|None) entries), baseline names, warm-up and repetitions."""
    cells = S.flatten_unique(args.cells or [S.DEFAULT_CELLS])
    modes = S.flatten_unique(args.modes or [S.MODES])
    which = S.flatten_unique(args.cases or [("layer", "encoder", "decode", "variant")])
    names = S.flatten_unique(args.providers or [])
    if args.eager and "eager" not in names:
        names = (names or list(GPU_DEFAULT if on_gpu else CPU_DEFAULT)) + ["eager"]
    if not on_gpu:
        provs = cpu_default.provider_list(names or None)
        return SimpleNamespace(
            device=torch.device("cpu"), dtypes=S.flatten_unique(args.dtypes or [("fp32",)]), modes=modes,
            providers=provs, plan=cpu_default.plan(cells, args.shapes, args.layers, args.bidirectional, which, provs),
            baseline="torch-cpu", baseline_fp16=None,
            warmup=1 if args.warmup is None else args.warmup, reps=args.reps or 5)
    from . import model_cases  # noqa: PLC0415
    names = list(names or GPU_DEFAULT)
    if "cudnn" not in names:
        names.insert(0, "cudnn")
    plan = []
    if "layer" in which:
        plan += [(c, True, None) for c in S.layer_cases(cells, args.shapes or S.ANCHOR_SHAPES,
                                                        args.layers, args.bidirectional)]
    plan += [(c, True, None) for c in model_cases.model_cases(which)]
    if "variant" in which:
        from . import variant_cases  # noqa: PLC0415
        plan += [(c, True, None) for c in variant_cases.variant_cases() if c.cell in cells]
    return SimpleNamespace(
        device=torch.device("cuda"), dtypes=S.flatten_unique(args.dtypes or [("fp32", "bf16", "fp16")]), modes=modes,
        providers=[PROVIDERS[n] for n in names], plan=plan, baseline="cudnn", baseline_fp16="cudnn-fp16",
        warmup=3 if args.warmup is None else args.warmup, reps=args.reps or 20)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    on_gpu = torch.cuda.is_available() and not args.cpu
    if not on_gpu:
        # before fusedrnn (and so triton) is imported anywhere in this process
        os.environ.setdefault("TRITON_INTERPRET", "1")
        print(("--cpu given: " if torch.cuda.is_available() else "") + cpu_default.NOTICE, flush=True)
    from . import meta as M, plot, report, stats, suite  # noqa: PLC0415
    from .timing import CudaEventTimer, HostTimer  # noqa: PLC0415

    cfg = configure(args, on_gpu)
    if on_gpu:
        print(f"fusedrnn benchmarks on {torch.cuda.get_device_name(0)}: {len(cfg.plan)} cases x {cfg.dtypes} x "
              f"{cfg.modes}, providers {[p.name for p in cfg.providers]}", flush=True)
    timer = CudaEventTimer() if on_gpu else HostTimer()
    settings = suite.Settings(device=cfg.device, dtypes=cfg.dtypes, modes=cfg.modes, providers=cfg.providers,
                              warmup=cfg.warmup, reps=cfg.reps, eager_max_t=args.eager_max_t,
                              time_limit_s=args.time_limit, seed=args.seed,
                              baseline=cfg.baseline, baseline_fp16=cfg.baseline_fp16)
    meta = M.collect(cfg.device, timer.description, argv)
    meta.update(baseline=cfg.baseline, baseline_fp16=cfg.baseline_fp16, warmup=cfg.warmup, reps=cfg.reps,
                providers=[p.name for p in cfg.providers], dtypes=cfg.dtypes, modes=cfg.modes)
    out_dir = args.out or M.default_out_dir(meta)

    def save(rows):
        report.write(out_dir, rows, stats.summary(rows), meta)

    mode = "none" if args.no_progress else args.progress
    bar = _progress(suite.count_items(cfg.plan, settings), mode == "bar")
    lines = progress_lines(len(cfg.plan) * len(cfg.dtypes)) if mode == "lines" else None
    try:
        rows = suite.run_all(cfg.plan, settings, timer, on_item=bar.update, on_case=save, on_progress=lines)
    finally:
        bar.close()
    summary = stats.summary(rows)
    paths = report.write(out_dir, rows, summary, meta)
    if not args.no_plot:
        png, why = plot.maybe_plot(rows, meta, out_dir / "speedup.png")
        if png:
            paths["png"] = png
        else:
            print(f"no plot: {why}")
    print(report.text(rows, summary, meta))
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    wrong = [r for r in rows if r["status"] == "WRONG"]
    if wrong:
        print(f"\n{len(wrong)} WRONG result(s): " + "; ".join(f"{r['provider']} {r['case']} {r['dtype']} {r['mode']}"
                                                         for r in wrong), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
