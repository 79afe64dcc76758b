"""The host path asks each question once: the environment is read once (fusedrnn.settings), a
backend choice is remembered until what it depends on changes, and the CUDA launcher asks the
extension for a launch's plan once per launch shape and tier knobs."""
import os

import pytest
import torch

import fusedrnn
from fusedrnn import backends, settings
from fusedrnn.ops import cuda as cuda_ops


def test_a_call_reads_the_snapshot_not_the_environment(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)  # refreshes the snapshot
    assert backends.requested_name("auto") == "auto"
    os.environ[backends.ENV_VAR] = "reference"  # a change fusedrnn is not told about
    try:
        assert backends.requested_name("auto") == "auto"
        settings.refresh()
        assert backends.requested_name("auto") == "reference"
    finally:
        del os.environ[backends.ENV_VAR]
        settings.refresh()
    assert backends.requested_name("auto") == "auto"


def test_a_remembered_choice_follows_the_settings_and_the_registered_backends(monkeypatch):
    args = ("auto", torch.device("cpu"), "lstm", torch.float32, 8, 0, 1, 1, False, 1)
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert backends.choose_name(*args) == "torch"  # 'auto' on the CPU
    monkeypatch.setenv(backends.ENV_VAR, "reference")
    assert backends.choose_name(*args) == "reference"
    monkeypatch.setitem(backends.KERNEL_BACKENDS, "spare", "fusedrnn.ops.triton")
    monkeypatch.setattr(backends, "BACKENDS", (*backends.BACKENDS, "spare"))
    args = ("spare", *args[1:])
    assert backends.choose_name(*args) == "spare"
    monkeypatch.setitem(backends.KERNEL_BACKENDS, "spare", "no.such.module")  # repointed: asked again
    with pytest.raises(RuntimeError, match="backend 'spare' cannot be imported"):
        backends.choose_name(*args)


class FakeExtension:
    """What the launcher asks of fusedrnn._C's plan(...): a plan per tier, counting calls."""

    def __init__(self):
        self.calls = []

    def plan(self, backward, cell, dtype, B, H, index, mode, units, batch_rows, passes, proj, directions, machine=None):
        self.calls.append((mode, units, batch_rows, passes))
        tier = "grid" if mode in ("auto", "grid") else mode
        return {"workspace_bytes": 64 * (units + 1) * (passes + 1), "tier": tier, "reason": "fake"}


def test_the_cuda_plan_is_asked_once_per_shape_and_knobs(monkeypatch):
    fake = FakeExtension()
    monkeypatch.setattr(cuda_ops, "_C", fake)
    monkeypatch.setattr(cuda_ops, "_plans", {})
    for name in (cuda_ops.MODE_ENV, cuda_ops.UNITS_ENV, cuda_ops.ROWS_ENV, cuda_ops.PASSES_ENV):
        monkeypatch.delenv(name, raising=False)

    def plan(B=3):
        return cuda_ops.launch_plan(False, "lstm", torch.float16, B, 64, 0, cuda_ops._knobs(), 0, 1)
    first = plan()
    assert plan() == first and len(fake.calls) == 1  # the same launch: no second crossing
    plan(B=4)
    assert len(fake.calls) == 2  # another shape: planned
    monkeypatch.setenv(cuda_ops.MODE_ENV, "cluster")
    assert plan() == (64, "cluster") and fake.calls[-1][0] == "cluster"  # a changed knob: a new plan
    monkeypatch.setenv(cuda_ops.UNITS_ENV, "8")
    assert plan() == (64 * 9, "cluster") and fake.calls[-1][1] == 8
    monkeypatch.setenv(cuda_ops.PASSES_ENV, "2")
    assert plan()[0] == 64 * 9 * 3
    monkeypatch.setenv(cuda_ops.ROWS_ENV, "16")
    calls = len(fake.calls)
    plan()
    assert len(fake.calls) == calls + 1 and fake.calls[-1][2] == 16
    monkeypatch.delenv(cuda_ops.MODE_ENV)
    monkeypatch.delenv(cuda_ops.UNITS_ENV)
    monkeypatch.delenv(cuda_ops.PASSES_ENV)
    monkeypatch.delenv(cuda_ops.ROWS_ENV)
    assert plan() == first and len(fake.calls) == calls + 1  # the first knobs again: remembered


def test_a_decode_step_reads_no_environment(monkeypatch):
    """A module's and a cell's no-grad step never touch os.environ (the snapshot is a dict)."""
    from support import plain_kernels  # noqa: PLC0415
    name = plain_kernels.install(monkeypatch)
    plain_kernels.install_step(monkeypatch)
    lstm, cell = fusedrnn.LSTM(3, 4, 2, backend=name), fusedrnn.LSTMCell(3, 4, backend=name)
    x = torch.randn(1, 2, 3)
    with torch.no_grad():
        lstm(x), cell(x[0])  # warm: first calls may import
        read = []
        real_get = os.environ.__class__.__getitem__
        monkeypatch.setattr(os.environ.__class__, "__getitem__", lambda self, k: read.append(k) or real_get(self, k))
        lstm(x), cell(x[0])
        monkeypatch.undo()
    assert read == []
