"""Memory: a long forward+backward loop stays flat, and fusedrnn.diagnostics measures the
saved-for-backward footprint exactly (tests/gpu measures it on the GPU)."""
import contextlib
import gc

import pytest
import torch

import fusedrnn
from support import plain_kernels
from fusedrnn import diagnostics
from support.memory import rss

ITERS, WARMUP = 200, 40
LIMIT = 8 * 2**20  # allowed RSS drift over ITERS - WARMUP iterations


@pytest.fixture
def kernel_backend(monkeypatch):
    return plain_kernels.install(monkeypatch)


def training_loop(backend, keep=None):
    """200 optimizer steps; returns (RSS growth after warm-up, growth of live Python objects)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: intra-op threads only spin (and crawl on a busy machine)
    try:
        return _loop(backend, keep)
    finally:
        torch.set_num_threads(threads)


def _loop(backend, keep):
    torch.manual_seed(0)
    model = fusedrnn.LSTM(32, 64, num_layers=2, backend=backend)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(16, 8, 32)
    start = objects = None
    for it in range(ITERS):
        if it == WARMUP:
            start, objects = rss(), len(gc.get_objects())
        with contextlib.ExitStack() as stack:
            if keep is not None:  # the leak a cache of saved-for-backward tensors would cause
                stack.enter_context(torch.autograd.graph.saved_tensors_hooks(lambda t: keep.append(t) or t,
                                                                             lambda t: t))
            y, (h, c) = model(x)
        loss = y.square().mean() + c.square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    grown = rss() - start
    return grown, len(gc.get_objects()) - objects


@pytest.mark.parametrize("use_kernels", [False, True], ids=["reference", "kernels"])
def test_training_loop_memory_is_flat(use_kernels, kernel_backend):
    grown, objects = training_loop(kernel_backend if use_kernels else "reference")
    assert grown < LIMIT, f"RSS grew {grown / 2**20:.1f} MiB over {ITERS - WARMUP} iterations"
    assert objects < 100, f"{objects} more live Python objects after the loop"


def test_the_measurement_sees_a_leak(kernel_backend):
    """The same loop holding on to every tensor autograd saved must trip both limits."""
    keep = []
    grown, objects = training_loop(kernel_backend, keep)
    assert grown > LIMIT, f"RSS grew only {grown / 2**20:.1f} MiB"
    assert objects > 100


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_kernel_saved_bytes_predicts_measurement(cell, kernel_backend):
    cls = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn_tanh": fusedrnn.RNN}[cell]
    m = cls(16, 32, backend=kernel_backend)
    x = torch.randn(8, 3, 16)
    rep = diagnostics.saved_bytes(lambda: m(x), preexisting=[x])
    # everything but x (which the input projection saves; x needs no grad, so W_ih is not saved)
    # is what the recurrence saves
    assert rep.activations == diagnostics.kernel_saved_bytes(plain_kernels, cell, 8, 3, 32)
    assert rep.preexisting == x.nbytes


@pytest.mark.parametrize("backend", ["reference", "kernels"])
def test_saved_bytes_per_token_is_independent_of_length(backend, kernel_backend):
    m = fusedrnn.GRU(16, 32, num_layers=2, backend=kernel_backend if backend == "kernels" else backend)
    per_token = [diagnostics.saved_bytes_per_token(m, torch.randn(T, 4, 16)) for T in (8, 32)]
    # only the initial states are per sequence, not per token: at most B*H*4 bytes spread over T
    assert per_token[0] >= per_token[1] > 0
    assert per_token[0] - per_token[1] <= 32 * 4 / 8 * 1.01


def test_saved_bytes_ignores_no_grad():
    m = fusedrnn.LSTM(4, 8, backend="reference")
    with torch.no_grad():
        rep = diagnostics.saved_bytes(lambda: m(torch.randn(3, 2, 4)))
    assert rep.total == 0 and rep.saved_tensors == 0
