"""One small forward + backward of backend="cuda" for a cell on every tier, sized for
compute-sanitizer.

    compute-sanitizer --tool memcheck python tests/gpu/sanitizer_case.py lstm
    compute-sanitizer --tool racecheck python tests/gpu/sanitizer_case.py gru --modes grid --dtype bf16
    compute-sanitizer --tool memcheck python tests/gpu/sanitizer_case.py lstm --directions 2 --proj 7 \
        --modes cta,cluster,grid,step
    compute-sanitizer --tool memcheck python tests/gpu/sanitizer_case.py lstm --proj 45 --H 48 --modes grid-passes
    compute-sanitizer --tool memcheck python tests/gpu/sanitizer_case.py gru --decode-step

Runs T=5, B=19, H=37 (odd H: 3 CTAs of 16 units; 3 batch groups of 8 rows, the last one
short) with lengths and both directions, on each tier forced (cta, cluster, grid, grid
with two passes over K, step) in every dtype unless --modes / --dtype narrow it. With
--directions 2 and/or --proj P (LSTM) it calls the cuda backend's forward and backward as
the kernel contract v2 says (both directions in one launch; a projection, whose P=7 leaves
the third CTA without P-units; the forced grid-passes tier needs 32-byte P-unit chunks per
CTA, e.g. --H 48 --proj 45). --decode-step runs the fused decode step instead (B=3 and 1,
odd I=33 and H=37 on the scalar path, and I=H=64 on the vector path). Each launch is
synchronised and checked (FUSEDRNN_CHECK=1), outputs are NaN-poisoned. Prints one line
per (tier, dtype, direction) and exits 1 if an output is not finite, a launch raised, or
CUDA is absent.
"""
from __future__ import annotations

import argparse
import os
import sys

TIERS = {
    "cta": dict(FUSEDRNN_CUDA_MODE="cta", FUSEDRNN_CUDA_BATCH_ROWS="8"),
    "cluster": dict(FUSEDRNN_CUDA_MODE="cluster", FUSEDRNN_CUDA_UNITS="16", FUSEDRNN_CUDA_BATCH_ROWS="8"),
    "grid": dict(FUSEDRNN_CUDA_MODE="grid", FUSEDRNN_CUDA_UNITS="16", FUSEDRNN_CUDA_BATCH_ROWS="8"),
    "grid-passes": dict(FUSEDRNN_CUDA_MODE="grid", FUSEDRNN_CUDA_UNITS="16", FUSEDRNN_CUDA_BATCH_ROWS="8",
                        FUSEDRNN_CUDA_PASSES="2"),
    "step": dict(FUSEDRNN_CUDA_MODE="step"),
    "auto": dict(FUSEDRNN_CUDA_MODE="auto"),
}
KNOBS = ("FUSEDRNN_CUDA_MODE", "FUSEDRNN_CUDA_UNITS", "FUSEDRNN_CUDA_BATCH_ROWS", "FUSEDRNN_CUDA_PASSES")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cell", choices=["lstm", "gru", "rnn_tanh", "rnn_relu"])
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None)
    ap.add_argument("--modes", default="cta,cluster,grid,grid-passes,step",
                    help="comma list of " + ", ".join(TIERS) + " (default: every forced tier)")
    ap.add_argument("--T", type=int, default=5)
    ap.add_argument("--B", type=int, default=19)
    ap.add_argument("--H", type=int, default=37)
    ap.add_argument("--directions", type=int, choices=(1, 2), default=1,
                    help="2: both directions in one launch (contract v2)")
    ap.add_argument("--proj", type=int, default=0, help="LSTM projection size P (contract v2), 0: none")
    ap.add_argument("--decode-step", action="store_true", help="run the fused decode step instead")
    args = ap.parse_args(argv)
    if args.proj and args.cell != "lstm":
        ap.error("--proj needs the lstm cell")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in TIERS]
    if unknown or not modes:
        ap.error(f"--modes: unknown {unknown}")
    os.environ["FUSEDRNN_CUDA_POISON"] = "1"
    os.environ["FUSEDRNN_CHECK"] = "1"
    # sanitizers stall kernels: the default spin limits, 64 times longer (also detected from
    # compute-sanitizer's environment; docs/integration.md, "Kernel timeouts")
    os.environ.setdefault("FUSEDRNN_TIMEOUT_SCALE", "64")

    import torch

    from fusedrnn.ops import GATES, recurrence

    if not torch.cuda.is_available():
        print("sanitizer_case: no CUDA device", file=sys.stderr)
        return 1
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    chosen = [args.dtype] if args.dtype else list(dtypes)
    G, T, B, H = GATES[args.cell], args.T, args.B, args.H
    if args.decode_step:
        return 0 if decode_step(args.cell, [dtypes[n] for n in chosen]) else 1
    ok = True
    for mode in modes:
        for k in KNOBS:
            os.environ.pop(k, None)
        os.environ.update(TIERS[mode])
        for name in chosen:
            dt = dtypes[name]
            if args.directions == 2 or args.proj:
                ok &= contract_v2(args.cell, T, B, H, args.proj or H, args.directions, dt, f"tier={mode} {name}")
                continue
            for reverse in (False, True):
                g = torch.Generator().manual_seed(0)
                mk = lambda *s: (torch.randn(*s, generator=g) * 0.5).to("cuda", dt).requires_grad_(True)  # noqa: E731
                gx, h0, w, b = mk(T, B, G * H), mk(B, H), mk(G * H, H), mk(G * H)
                c0 = mk(B, H) if args.cell == "lstm" else None
                lengths = torch.tensor([T] + [max(1, T - 2 - i % T) for i in range(B - 1)], device="cuda")
                what = f"sanitizer_case {args.cell} {name} reverse={reverse} tier={mode}"
                try:
                    outs = recurrence(args.cell, gx, h0, c0, w, b, lengths, reverse, backend="cuda")
                    sum(o.float().sum() for o in outs).backward()
                    torch.cuda.synchronize()
                except RuntimeError as e:
                    print(f"{what}: RAISED {e}")
                    ok = False
                    continue
                tensors = list(outs) + [t.grad for t in (gx, h0, c0, w, b) if t is not None]
                finite = all(bool(torch.isfinite(t).all()) for t in tensors)
                ok &= finite
                print(f"{what}: {'ok' if finite else 'NON-FINITE OUTPUT'}")
    return 0 if ok else 1


def contract_v2(cell, T, B, H, P, D, dt, what) -> bool:
    """Forward and backward of the cuda backend with D directions and/or a projection."""
    import torch

    from fusedrnn.ops import GATES
    from fusedrnn.ops import cuda as cuda_ops

    G = GATES[cell]
    g = torch.Generator().manual_seed(0)
    lead = (D,) if D > 1 else ()
    mk = lambda *s: (torch.randn(*s, generator=g) * 0.5).to("cuda", dt)  # noqa: E731
    gx, h0, w, b = mk(T, B, D * G * H), mk(*lead, B, P), mk(*lead, G * H, P), mk(*lead, G * H)
    c0 = mk(*lead, B, H) if cell == "lstm" else None
    w_hr = mk(*lead, P, H) if P != H else None
    lengths = torch.tensor([T] + [max(1, T - 2 - i % T) for i in range(B - 1)], device="cuda", dtype=torch.int32)
    what = f"sanitizer_case {cell} D={D} P={P} {what}"
    try:
        y, hT, cT, saved = cuda_ops.forward(cell, gx, h0, c0, w, b, lengths, False, True, w_hr)
        grads = cuda_ops.backward(cell, torch.ones_like(y), torch.ones_like(hT),
                                  torch.ones_like(cT) if cT is not None else None, gx, h0, c0, w, b, lengths, False,
                                  y.clone(), saved, w_hr)
        torch.cuda.synchronize()
    except RuntimeError as e:
        print(f"{what}: RAISED {e}")
        return False
    tensors = [y, hT, cT, *saved, *grads]
    finite = all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)
    print(f"{what}: {'ok' if finite else 'NON-FINITE OUTPUT'}")
    return finite


def decode_step(cell, dtypes) -> bool:
    """The fused decode step on the scalar path (odd sizes) and the vector path, 1 and 3+ rows."""
    import torch

    from fusedrnn.ops import GATES
    from fusedrnn.ops import cuda as cuda_ops

    G, ok = GATES[cell], True
    for dt in dtypes:
        for B, I, H in ((3, 33, 37), (1, 64, 64), (11, 64, 64)):
            g = torch.Generator().manual_seed(0)
            mk = lambda *s: (torch.randn(*s, generator=g) * 0.3).to("cuda", dt)  # noqa: E731
            x, h0, w_ih, w_hh, b_ih, b_hh = mk(B, I), mk(B, H), mk(G * H, I), mk(G * H, H), mk(G * H), mk(G * H)
            c0 = mk(B, H) if cell == "lstm" else None
            what = f"sanitizer_case {cell} decode step {dt} B={B} I={I} H={H}"
            try:
                h, c = cuda_ops.step(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
                torch.cuda.synchronize()
            except RuntimeError as e:
                print(f"{what}: RAISED {e}")
                ok = False
                continue
            finite = bool(torch.isfinite(h).all()) and (c is None or bool(torch.isfinite(c).all()))
            ok &= finite
            print(f"{what}: {'ok' if finite else 'NON-FINITE OUTPUT'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
