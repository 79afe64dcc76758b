"""One small forward + backward of backend="cuda" for a cell, sized for compute-sanitizer.

    compute-sanitizer --tool memcheck python tests/gpu/sanitizer_case.py lstm
    compute-sanitizer --tool racecheck python tests/gpu/sanitizer_case.py gru --mode step

Runs T=5, B=3, H=37 (odd, several blocks) with lengths and both directions, in every
dtype unless --dtype is given; exits 1 if an output is not finite or CUDA is absent.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cell", choices=["lstm", "gru", "rnn_tanh", "rnn_relu"])
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None)
    ap.add_argument("--mode", choices=["auto", "persistent", "step"], default="auto")
    ap.add_argument("--T", type=int, default=5)
    ap.add_argument("--B", type=int, default=3)
    ap.add_argument("--H", type=int, default=37)
    args = ap.parse_args(argv)
    os.environ["FUSEDRNN_CUDA_MODE"] = args.mode
    os.environ["FUSEDRNN_CUDA_POISON"] = "1"

    import torch

    from fusedrnn.ops import GATES, recurrence

    if not torch.cuda.is_available():
        print("sanitizer_case: no CUDA device", file=sys.stderr)
        return 1
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    chosen = [args.dtype] if args.dtype else list(dtypes)
    G, T, B, H = GATES[args.cell], args.T, args.B, args.H
    g = torch.Generator().manual_seed(0)
    ok = True
    for name in chosen:
        dt = dtypes[name]
        for reverse in (False, True):
            mk = lambda *s: (torch.randn(*s, generator=g) * 0.5).to("cuda", dt).requires_grad_(True)  # noqa: E731
            gx, h0, w, b = mk(T, B, G * H), mk(B, H), mk(G * H, H), mk(G * H)
            c0 = mk(B, H) if args.cell == "lstm" else None
            lengths = torch.tensor([T] + [max(1, T - 2 - i) for i in range(B - 1)], device="cuda")
            outs = recurrence(args.cell, gx, h0, c0, w, b, lengths, reverse, backend="cuda")
            sum(o.float().sum() for o in outs).backward()
            torch.cuda.synchronize()
            tensors = list(outs) + [t.grad for t in (gx, h0, c0, w, b) if t is not None]
            finite = all(bool(torch.isfinite(t).all()) for t in tensors)
            ok &= finite
            print(f"sanitizer_case {args.cell} {name} reverse={reverse} mode={args.mode}: "
                  f"{'ok' if finite else 'NON-FINITE OUTPUT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
