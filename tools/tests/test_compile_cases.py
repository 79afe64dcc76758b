"""The compile gate's `--sample` (the default test run's gate): one (cell, dtype) per shape,
and still every shape, cell and dtype of the set."""
import pytest

from tools.compile_check.__main__ import parse_args
from tools.compile_check.cases import CELLS, DTYPES, make_cases, shape_set


@pytest.mark.parametrize("shapes", ["anchors", "ci"])
def test_the_sample_compiles_every_shape_cell_and_dtype(shapes):
    sample = make_cases(shapes, CELLS, DTYPES, sample=True)
    assert [(c.B, c.H, c.anchor) for c in sample] == shape_set(shapes)
    assert {c.cell for c in sample} == set(CELLS) and {c.dtype for c in sample} == set(DTYPES)
    assert set(sample) < set(make_cases(shapes, CELLS, DTYPES))


def test_sample_is_a_flag_of_the_gate():
    assert parse_args(["--sample"]).sample and not parse_args([]).sample
