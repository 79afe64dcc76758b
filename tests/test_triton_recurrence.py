"""backend="triton" at the ops level against the float64 reference: values and every
gradient (gx, h0, c0, w_hh, b_hh) for each cell.

Without a GPU the kernels run in Triton's CPU interpreter (tests/conftest.py sets
TRITON_INTERPRET=1) in the configuration the choice code picks there (carry or solo;
tests/test_triton_layouts.py forces every other layout); with a GPU the same tests
run on it. The axes T, B, H, lengths, direction, dtype and bias are covered
pairwise (every pair of values of every two axes appears in some case), not as the
full product, to keep the interpreter run short.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from fusedrnn import ops
from fusedrnn.ops import reference
from fusedrnn.ops.common import GATES

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
AXES = {
    "cell": CELLS,
    "T": (1, 7, 33),
    "B": (1, 3, 8),
    "H": (8, 17, 32, 64),
    "lengths": (False, True),
    "reverse": (False, True),
    "dtype": (torch.float32, torch.bfloat16),
    "bias": (True, False),
}


def pairwise(axes: dict) -> list[dict]:
    """A greedy covering array: every pair of values of any two axes occurs in some case."""
    names = list(axes)
    todo = {((a, va), (b, vb)) for a, b in itertools.combinations(names, 2) for va in axes[a] for vb in axes[b]}
    cases = []
    candidates = [dict(zip(names, vals)) for vals in itertools.product(*axes.values())]
    while todo:
        def gain(c):
            return sum(((a, c[a]), (b, c[b])) in todo for a, b in itertools.combinations(names, 2))
        best = max(candidates, key=gain)  # first maximum: deterministic
        cases.append(best)
        todo -= {((a, best[a]), (b, best[b])) for a, b in itertools.combinations(names, 2)}
    return cases


CASES = pairwise(AXES)


def case_id(c):
    return "-".join([c["cell"], f"T{c['T']}", f"B{c['B']}", f"H{c['H']}", "len" if c["lengths"] else "full",
                     "rev" if c["reverse"] else "fwd", str(c["dtype"]).split(".")[1],
                     "bias" if c["bias"] else "nobias"])


def make_args(cell, T, B, H, dtype, lengths, bias, seed=0, device=DEVICE):
    """Leaf tensors (gx, h0, c0, w_hh, b_hh) in `dtype`, and lengths or None."""
    G = GATES[cell]
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype).requires_grad_()

    args = [leaf(T, B, G * H), leaf(B, H), leaf(B, H) if cell == "lstm" else None,
            leaf(G * H, H, scale=H ** -0.5), leaf(G * H) if bias else None]
    lens = None
    if lengths:
        lens = torch.randint(1, T + 1, (B,), generator=g)
        lens[0] = T  # the longest sequence fills the batch, as in a PackedSequence
    return args, lens


def run(cell, args, lens, reverse, backend, dtype=None, seed=1):
    """Outputs and gradients of a fixed random loss, every tensor as float64.

    `dtype` recasts the leaves first (the reference run in another dtype)."""
    if dtype is not None:
        args = [a.detach().to(dtype).requires_grad_() if a is not None else None for a in args]
    outs = ops.recurrence(cell, *args, lengths=lens, reverse=reverse, backend=backend)
    g = torch.Generator().manual_seed(seed)
    cots = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device, o.dtype) for o in outs]
    loss = sum((o * c).sum() for o, c in zip(outs, cots))
    leaves = [a for a in args if a is not None]
    grads = torch.autograd.grad(loss, leaves)
    names = ["y", "hT"] + (["cT"] if cell == "lstm" else []) + \
        [n for n, a in zip(("d_gx", "d_h0", "d_c0", "d_w_hh", "d_b_hh"), args) if a is not None]
    return dict(zip(names, [t.detach().double() for t in list(outs) + list(grads)]))


def errors(got: dict, truth: dict) -> dict:
    return {k: (got[k] - truth[k]).abs().max().item() for k in truth}


def check_against_reference(cell, T, B, H, lengths, reverse, dtype, bias, seed=0):
    """Assert the triton backend matches the float64 reference within the dtype's rule."""
    args, lens = make_args(cell, T, B, H, dtype, lengths, bias, seed)
    ours = run(cell, args, lens, reverse, "triton")
    truth = run(cell, args, lens, reverse, "reference", dtype=torch.float64)
    err = errors(ours, truth)
    if dtype == torch.float32:
        bound = {k: 3e-5 * (1.0 + truth[k].abs().max().item()) for k in truth}
    else:
        # no worse than twice the error the reference itself makes run in this dtype
        ref_err = errors(run(cell, args, lens, reverse, "reference", dtype=dtype), truth)
        bound = {k: 2.0 * ref_err[k] + 1e-6 * (1.0 + truth[k].abs().max().item()) for k in truth}
    bad = {k: (err[k], bound[k]) for k in truth if not err[k] <= bound[k]}
    assert not bad, f"error above bound (err, bound): {bad}"
    return err


def test_cases_cover_every_pair():
    assert len(CASES) < 40
    for a, b in itertools.combinations(AXES, 2):
        seen = {(c[a], c[b]) for c in CASES}
        assert seen == set(itertools.product(AXES[a], AXES[b])), (a, b)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_reference(case):
    check_against_reference(**case)


@pytest.mark.parametrize("cell", CELLS)
def test_float16(cell):
    check_against_reference(cell, 9, 5, 24, lengths=True, reverse=False, dtype=torch.float16, bias=True)
