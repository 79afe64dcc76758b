"""Hostile input drawn all at once (hypothesis), for every backend, against torch.nn.

One example combines: a layout for the input (strided, channel-permuted, stride-0 batch),
for the states (transposed, stride-0) and aliasing (h0 and c0 one tensor, x and h0 views
of one buffer); variable lengths (a PackedSequence, sorted or not); and a NaN/±inf in the
input or a state. fusedrnn must give torch.nn's NaN and ±inf positions and, elsewhere,
values no further from torch.nn in float64 than twice torch.nn's own float32 error (the
reference backend runs float64 and must match torch.nn there to 1e-9).

A second property draws the layout of every argument of fusedrnn.ops.recurrence (strided
or expanded, lengths included) with non-finite values at real or padded steps, against
each sequence run alone through the float64 reference.
"""
from hypothesis import example, given, settings

from support import backend_params
from support import plain_kernels
from support.hostile import check_module_example, check_recurrence_example, FIXTURE_OK, hostile_modules, hostile_recurrences, ISSUE_EXAMPLES


@settings(max_examples=30, deadline=None)
@given(c=hostile_modules())
@example(c=ISSUE_EXAMPLES[0])
@example(c=ISSUE_EXAMPLES[1])
def test_hostile_module_input_reference(c):
    check_module_example(c, "reference")


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_OK)
@given(c=hostile_modules())
@example(c=ISSUE_EXAMPLES[0])
@example(c=ISSUE_EXAMPLES[1])
def test_hostile_module_input_kernel_path(monkeypatch, c):
    check_module_example(c, plain_kernels.install(monkeypatch))


@backend_params.needs_triton
@settings(max_examples=12, deadline=None)
@given(c=hostile_modules())
@example(c=ISSUE_EXAMPLES[1])
def test_hostile_module_input_triton(c):
    check_module_example(c, "triton")


# -- fusedrnn.ops.recurrence: every argument's layout, lengths, non-finite padding ---------


@settings(max_examples=30, deadline=None)
@given(c=hostile_recurrences())
def test_hostile_recurrence_reference(c):
    check_recurrence_example(c, "reference")


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_OK)
@given(c=hostile_recurrences())
def test_hostile_recurrence_kernel_path(monkeypatch, c):
    check_recurrence_example(c, plain_kernels.install(monkeypatch))


@backend_params.needs_triton
@settings(max_examples=15, deadline=None)
@given(c=hostile_recurrences())
def test_hostile_recurrence_triton(c):
    check_recurrence_example(c, "triton")
