"""backend="triton" at the ops level against the float64 reference: values and every
gradient (gx, h0, c0, w_hh, b_hh) for each cell.

Without a GPU the kernels run in Triton's CPU interpreter (tests/conftest.py sets
TRITON_INTERPRET=1) in the configuration the choice code picks there (cta or solo;
tests/test_triton_layouts.py forces every other layout); with a GPU the same tests
run on it. The axes T, B, H, lengths, direction, dtype and bias are covered
pairwise (every pair of values of every two axes appears in some case), not as the
full product, to keep the interpreter run short.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from support.triton_recurrence import check_against_reference

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
