"""Several Python threads calling one module at once get the results of calling it alone.

Under Triton's CPU interpreter, launches from two threads would break each other (the
interpreter patches triton.language module-wide while a kernel runs): fusedrnn lets them
take turns there. On a GPU nothing is shared between calls; the plain kernel backend
checks that the custom-op path itself keeps no state between calls.
"""
import threading

import pytest
import torch

import fusedrnn
from support import backend_params


@pytest.fixture(params=backend_params.ALL)
def backend(request, monkeypatch):
    return backend_params.resolve(request.param, monkeypatch)


def forward_backward(module, x):
    x = x.detach().requires_grad_()
    y, _ = module(x)
    return [y.detach()] + list(torch.autograd.grad(y.square().sum(), [x, module.weight_hh_l0]))


@pytest.mark.parametrize("cls", [fusedrnn.LSTM, fusedrnn.GRU, fusedrnn.RNN], ids=["lstm", "gru", "rnn"])
def test_threads_sharing_one_module(cls, backend):
    torch.manual_seed(0)
    module = cls(4, 8, backend=backend)
    inputs = [torch.randn(3, 2, 4) for _ in range(3)]
    want = [forward_backward(module, x) for x in inputs]
    errors, got = [], {}

    def work(i):
        try:
            for rep in range(2):
                got[i, rep] = forward_backward(module, inputs[i])
        except Exception as e:  # noqa: BLE001  (reported below, with its type)
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    for (i, _), results in got.items():
        for a, b in zip(results, want[i]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
