"""Run-to-run determinism: the same call twice gives the same bits, forward and backward.

CPU: the reference backend, the kernel-backend path (custom ops, weight-gradient GEMMs)
through tests/support/plain_kernels.py, and the Triton kernels under the interpreter when the
triton backend can run here. CUDA kernels: tests/gpu/test_integration_gpu.py.
"""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from support import plain_kernels
from fusedrnn import backends

CLASSES = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn_tanh": fusedrnn.RNN}


@pytest.fixture
def kernel_backend(monkeypatch):
    return plain_kernels.install(monkeypatch)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit pattern, so NaN payloads and -0.0 count too."""
    t = t.detach().contiguous()
    return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])


def one_run(cls, backend, packed, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    m = cls(5, 8, backend=backend, dtype=dtype, **kw)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 4, 5, generator=g, dtype=dtype)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([7, 5, 5, 1]))
    data = (x.data if packed else x).requires_grad_()
    if packed:
        x = torch.nn.utils.rnn.PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    y, h = m(x)
    y = y.data if packed else y
    outs = [y] + (list(h) if isinstance(h, tuple) else [h])
    loss = sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in outs)
    loss.backward()
    return [bits(t) for t in outs + [data.grad] + [p.grad for p in m.parameters()]]


def assert_bitwise_repeatable(*args, runs=3, **kw):
    first = one_run(*args, **kw)
    for _ in range(runs - 1):
        again = one_run(*args, **kw)
        assert len(again) == len(first)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


@pytest.mark.parametrize("cell", list(CLASSES))
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("use_kernels", [False, True], ids=["reference", "kernels"])
def test_repeat_runs_are_bitwise_identical(cell, packed, use_kernels, kernel_backend):
    backend = kernel_backend if use_kernels else "reference"
    assert_bitwise_repeatable(CLASSES[cell], backend, packed, num_layers=2, bidirectional=True)


def test_bf16_runs_are_bitwise_identical(kernel_backend):
    assert_bitwise_repeatable(fusedrnn.LSTM, kernel_backend, True, dtype=torch.bfloat16, num_layers=2)


@pytest.mark.parametrize("use_kernels", [False, True], ids=["reference", "kernels"])
def test_deterministic_algorithms_mode_runs_and_agrees(use_kernels, kernel_backend):
    """torch.use_deterministic_algorithms(True) accepts the fused path and changes no bits."""
    backend = kernel_backend if use_kernels else "reference"
    free = one_run(fusedrnn.GRU, backend, True, num_layers=2)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        strict = one_run(fusedrnn.GRU, backend, True, num_layers=2)
    finally:
        torch.use_deterministic_algorithms(before)
    for a, b in zip(free, strict):
        assert torch.equal(a, b)


def triton_reason():
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton is not installed: {e}"
    return backends.why_not("triton", torch.device("cpu"), "lstm", torch.float32, 8)


@pytest.mark.parametrize("cell", list(CLASSES))
def test_triton_interpreter_runs_are_bitwise_identical(cell):
    reason = triton_reason()
    if reason is not None:
        pytest.skip(f"triton backend cannot run on the CPU here: {reason}")
    assert_bitwise_repeatable(CLASSES[cell], "triton", True, runs=2)
