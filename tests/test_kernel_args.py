"""Every tensor handed to a kernel backend is contiguous, whatever views the caller passes.

A kernel computes its own offsets from the shape, so a strided or stride-0 (expanded)
view it is given is read as raw memory: wrong values, or reads past the allocation (a
segfault on the CPU interpreter, an illegal address on a GPU). The Triton checks run in a
subprocess (tests/support/strided_args.py) so that a crash fails the test instead of the run.
"""
import os
import subprocess
import sys

import pytest
import torch

from support import backend_params
from support import plain_kernels
from support import strided_args

HERE = os.path.dirname(os.path.abspath(__file__))


@backend_params.needs_triton
def test_triton_with_strided_and_expanded_arguments_in_a_subprocess():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "support", "strided_args.py"), "triton"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "all layouts match" in proc.stdout


@pytest.mark.parametrize("backend", ["reference", "kernels"])
def test_strided_and_expanded_arguments(backend, monkeypatch):
    """The same checks in-process where nothing reads raw memory (plain torch behind both)."""
    assert strided_args.check(backend_params.resolve(backend, monkeypatch)) == []


@pytest.fixture
def checking_backend(monkeypatch):
    """plain_kernels behind the "triton" name, asserting the contract on every tensor it gets."""
    seen = []

    def check(*args):
        for a in args:
            for t in (a if isinstance(a, tuple) else (a,)):
                if isinstance(t, torch.Tensor):
                    assert t.is_contiguous(), f"a kernel got a non-contiguous tensor {tuple(t.stride())}"
                    assert all(s != 0 for s, n in zip(t.stride(), t.shape) if n > 1), "a stride-0 tensor"
                    seen.append(t)

    def forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
        check(gx, h0, c0, w_hh, b_hh, lengths)
        assert lengths is None or (lengths.dtype == torch.int32 and lengths.device == gx.device)
        return real_forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad)

    def backward(cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y, saved):
        check(dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, y, saved)
        return real_backward(cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y, saved)

    real_forward, real_backward = plain_kernels.forward, plain_kernels.backward
    name = plain_kernels.install(monkeypatch)
    monkeypatch.setattr(plain_kernels, "forward", forward)
    monkeypatch.setattr(plain_kernels, "backward", backward)
    return name, seen


@pytest.mark.parametrize("layouts", list(strided_args.LAYOUT_SETS))
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_backend_receives_only_contiguous_tensors(checking_backend, cell, layouts):
    name, seen = checking_backend
    for reverse in (False, True):
        args = strided_args.case(cell, reverse, strided_args.LAYOUT_SETS[layouts])
        got = strided_args.run(cell, args, name, reverse)
        want = strided_args.run(cell, strided_args.contiguous_copy(args), "reference", reverse)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert len(seen) >= 10  # forward and backward both ran through the check
