"""The default run's sample of a parametrised test (tests/support/sampling.py): every value
of every parameter runs at least once, the same cases on every run, and nothing is sampled
out of the full run."""
from types import SimpleNamespace
from typing import NamedTuple

import pytest
import torch

from support import sampling


class Case(NamedTuple):
    cell: str
    D: int
    T: int = 4


def items(**axes):
    """Fake collected items over the product of the given parameter values."""
    import itertools
    names = list(axes)
    return [SimpleNamespace(callspec=SimpleNamespace(params=dict(zip(names, combo))), nodeid=str(combo))
            for combo in itertools.product(*axes.values())]


def covered(kept, name):
    return {i.callspec.params[name] for i in kept}


def test_every_value_of_every_parameter_is_kept():
    axes = dict(cell=["lstm", "gru", "rnn_tanh", "rnn_relu"], dtype=[torch.float32, torch.bfloat16, torch.float16],
                size=[(1, 5, 1), (3, 5, 33), (1, 130, 3)], bias=[True, False])
    group = items(**axes)
    kept = sampling.covering_sample(group)
    assert len(kept) < len(group) // 4
    for name, values in axes.items():
        assert covered(kept, name) == set(values)


def test_named_tuple_cases_are_covered_field_by_field():
    group = items(case=[Case(c, d, t) for c in ("lstm", "gru") for d in (1, 2) for t in (1, 4)])
    kept = sampling.covering_sample(group)
    cases = covered(kept, "case")
    assert {c.cell for c in cases} == {"lstm", "gru"} and {c.D for c in cases} == {1, 2}
    assert {c.T for c in cases} == {1, 4} and len(kept) < len(group)


def test_the_sample_is_the_same_on_every_run():
    group = items(a=range(7), b="xyz", c=[None, 1.5])
    assert [i.nodeid for i in sampling.covering_sample(group)] == \
        [i.nodeid for i in sampling.covering_sample(list(group))]


def test_a_value_that_cannot_be_hashed_still_counts():
    group = items(shape=[[1, 2], [3, 4]], flag=[True])
    assert len(sampling.covering_sample(group)) == 2


@pytest.mark.parametrize("value,full", [("1", True), ("true", True), ("", False), ("0", False)])
def test_the_full_switch(monkeypatch, value, full):
    monkeypatch.setenv(sampling.FULL_ENV, value)
    assert sampling.full_run() is full


SAMPLED_FILE = """
import pytest

@pytest.mark.sampled
@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_kernel(cell, dtype):
    assert (cell, dtype) != ("gru", "fp32"), "a failure only the full run reaches"

@pytest.mark.full_only
def test_expensive():
    pass

def test_plain():
    pass
"""


@pytest.fixture
def run_sampled(pytester, monkeypatch, tmp_path):
    monkeypatch.setattr(sampling, "REPORT", tmp_path / "sample.txt")
    pytester.makepyfile(test_k=SAMPLED_FILE)

    def run(full):
        monkeypatch.setenv(sampling.FULL_ENV, "1" if full else "")
        return pytester.runpytest("-p", "support.sampling", "-p", "no:cacheprovider")
    return run


def test_the_default_run_deselects_prints_and_lists_what_it_left_out(run_sampled):
    res = run_sampled(full=False)
    res.assert_outcomes(passed=5, deselected=9)  # 4 of 12 cases (every cell and dtype once), test_plain
    res.stdout.fnmatch_lines(["*sampled: 4 of 13 cases of 2 parametrised tests ran, 9 left out*",
                              "*0 of     1  test_k.py::test_expensive*", "*4 of    12  test_k.py::test_kernel*"])
    listed = sampling.REPORT.read_text()
    assert "test_kernel[gru-fp32]" in listed and "test_expensive" in listed.split("# left out")[1]


def test_the_full_run_runs_every_case_and_finds_the_failure_the_sample_left_out(run_sampled):
    res = run_sampled(full=True)
    res.assert_outcomes(passed=13, failed=1)
    assert "sampled:" not in res.stdout.str()
