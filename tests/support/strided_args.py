"""Strided and stride-0 (expanded) views of every argument of fusedrnn.ops.recurrence.

Run as a script, `python tests/support/strided_args.py BACKEND [DEVICE]`, it checks one backend (outputs and
every gradient, with strided gradients flowing in) against the reference run on contiguous
copies and exits non-zero on a mismatch; tests/test_kernel_args.py runs it in a subprocess
so that a kernel reading raw memory past a view (a segfault) fails the test instead of
killing the test run (tests/gpu/test_hostile_gpu.py does the same on a GPU for the triton
and cuda backends). BACKEND "plain" points the kernel-backend path at tests/support/plain_kernels.py;
DEVICE defaults to "cpu" (where triton runs in its interpreter).

Dimensions: T steps, B batch, H hidden units, G gates.
"""
from __future__ import annotations

import itertools
import os
import sys

import torch

T, B, H = 4, 3, 5
ARGS = ("gx", "h0", "c0", "w_hh", "b_hh", "lengths")
GRADS = ("y", "hT", "cT")


def strided(t: torch.Tensor, how: str, g: torch.Generator) -> torch.Tensor:
    """A view with t's values but not t's layout: 'strided' reads every other element of a
    larger buffer whose other elements are poison, 'expanded' is a stride-0 broadcast (so
    its values are the first row's, repeated), 'plain' is t itself."""
    if how == "plain":
        return t
    if how == "expanded":
        row = t[:1] if t.dim() else t
        return row.expand(t.shape)
    poison = 10**9 if not t.is_floating_point() else float("nan")
    big = torch.full((*t.shape[:-1], 2 * t.shape[-1]) if t.dim() else (2,), poison, dtype=t.dtype, device=t.device)
    view = big[..., ::2] if t.dim() else big[0]
    view.copy_(t)
    return view


def case(cell: str, reverse: bool, layouts: dict, seed: int = 0, device="cpu"):
    """Arguments and output cotangents of one call, each in the layout `layouts` gives it."""
    from fusedrnn.ops import GATES  # noqa: PLC0415

    g = torch.Generator().manual_seed(seed)
    G = GATES[cell]
    r = lambda *s: torch.randn(*s, generator=g) * 0.5  # noqa: E731
    vals = dict(gx=r(T, B, G * H), h0=r(B, H), c0=r(B, H) if cell == "lstm" else None, w_hh=r(G * H, H),
                b_hh=r(G * H), lengths=torch.tensor([T, 2, 1], dtype=torch.int32),
                y=r(T, B, H), hT=r(B, H), cT=r(B, H) if cell == "lstm" else None)
    return {k: (strided(v.to(device), layouts.get(k, "plain"), g) if v is not None else None)
            for k, v in vals.items()}


def run(cell, args, backend, reverse):
    """Outputs and the gradients of every floating argument, cotangents taken from args."""
    import fusedrnn  # noqa: PLC0415

    # detach() keeps the caller's strides, so each leaf is still the strided or expanded view
    inputs = {k: args[k].detach().requires_grad_() for k in ARGS[:5] if args[k] is not None}
    out = fusedrnn.ops.recurrence(cell, inputs["gx"], inputs["h0"], inputs.get("c0"), inputs["w_hh"],
                                  inputs["b_hh"], lengths=args["lengths"], reverse=reverse, backend=backend)
    cot = [args[k] for k in GRADS[:len(out)]]
    grads = torch.autograd.grad(out, list(inputs.values()), grad_outputs=cot)
    return [o.detach() for o in out] + list(grads)


def contiguous_copy(args):
    return {k: (v.detach().contiguous().clone() if v is not None else None) for k, v in args.items()}


LAYOUT_SETS = {
    "all-strided": {k: "strided" for k in ARGS + GRADS},
    "all-expanded": {k: "expanded" for k in ARGS + GRADS},
    "lengths-strided": {"lengths": "strided"},
    "lengths-expanded": {"lengths": "expanded"},
}


def check(backend: str, device="cpu") -> list[str]:
    """Every cell, both directions, every layout set: the failures as readable lines."""
    failures = []
    for cell in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        for (name, layouts), reverse in itertools.product(LAYOUT_SETS.items(), (False, True)):
            args = case(cell, reverse, layouts, device=device)
            assert any(v is not None and not v.is_contiguous() for v in args.values()) or name.startswith("lengths")
            want = run(cell, contiguous_copy(args), "reference", reverse)
            got = run(cell, args, backend, reverse)
            err = max((a - b).abs().max().item() for a, b in zip(got, want))
            if not err <= 1e-4:  # NaN fails too
                failures.append(f"{backend} {cell} reverse={reverse} {name}: max error {err}")
    return failures


def main(argv) -> int:
    backend, device = argv[1], (argv[2] if len(argv) > 2 else "cpu")
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if backend == "plain":
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
        import fusedrnn  # noqa: PLC0415
        from support import plain_kernels  # noqa: PLC0415  (registers itself with the custom ops)
        fusedrnn.backends.KERNEL_BACKENDS["triton"] = plain_kernels.__name__
        backend = "triton"
    failures = check(backend, device)
    if device != "cpu":
        torch.cuda.synchronize()  # an illegal address surfaces here at the latest
    print("\n".join(failures) or "all layouts match")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
