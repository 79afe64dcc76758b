"""DistributedDataParallel over fusedrnn.LSTM: two CPU processes (gloo) each training on
half the batch end with the parameters of one process training on the whole batch.

What this can show on the CPU: the fused path trains correctly under DDP (gradient
hooks, bucketing and parameter broadcast all see ordinary Parameters), it never
enters torch's own RNN kernels (`_VF.lstm`, where cuDNN raises "RNN module weights
are not part of single contiguous chunk of memory"), and no warning of that kind is
emitted. The warning itself only exists on CUDA; tests/gpu/test_integration_gpu.py
checks it there with non-contiguous weights.
"""
import os
import tempfile
import warnings

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import fusedrnn
import plain_kernels  # registers itself with the custom ops
from spawn_workers import join_gloo, run_workers

WORLD, STEPS, BATCH = 2, 4, 6
BACKENDS = ["reference", "kernels"]


class Model(nn.Module):
    def __init__(self, backend):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = fusedrnn.LSTM(3, 5, num_layers=2, bidirectional=True, backend=backend, dtype=torch.float64)
        self.head = nn.Linear(10, 1, dtype=torch.float64)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def batch(step):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(4, BATCH, 3, generator=g, dtype=torch.float64), \
        torch.randn(4, BATCH, 1, generator=g, dtype=torch.float64)


def train(model, rank=0, world=1):
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    per = BATCH // world
    for step in range(STEPS):
        x, target = batch(step)
        sl = slice(rank * per, (rank + 1) * per)
        loss = (model(x[:, sl]) - target[:, sl]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def backend_name(name):
    if name == "kernels":
        fusedrnn.backends.KERNEL_BACKENDS["triton"] = plain_kernels.__name__
        return "triton"
    return name


def worker(rank, port, out_path):
    torch.set_num_threads(1)  # two processes share the cores
    join_gloo(rank, WORLD, port)
    torch_rnn_calls = []
    real_lstm = torch._VF.lstm
    torch._VF.lstm = lambda *a, **k: torch_rnn_calls.append(1) or real_lstm(*a, **k)
    result = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in BACKENDS:
            model = Model(backend_name(name))
            train(DDP(model), rank, WORLD)
            result[name] = [p.detach().clone() for p in model.parameters()]
    result["warnings"] = [str(w.message) for w in caught]
    result["torch_rnn_calls"] = len(torch_rnn_calls)
    Model("torch")(batch(0)[0])  # control: the spy does see torch.nn's own path
    result["spy_works"] = len(torch_rnn_calls) > result["torch_rnn_calls"]
    torch.save(result, f"{out_path}.{rank}")
    dist.destroy_process_group()


def test_ddp_two_processes_equals_single_process_on_full_batch(monkeypatch):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result")
        run_workers(worker, WORLD, out)
        results = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    monkeypatch.setitem(fusedrnn.backends.KERNEL_BACKENDS, "triton", plain_kernels.__name__)
    for name in BACKENDS:
        single = Model("triton" if name == "kernels" else name)
        initial = [p.detach().clone() for p in single.parameters()]
        train(single)
        for rank_result in results:
            for got, want, init in zip(rank_result[name], single.parameters(), initial):
                torch.testing.assert_close(got, want.detach(), atol=1e-12, rtol=1e-10)
                assert not torch.equal(got, init)  # training moved every parameter
    for rank_result in results:
        assert rank_result["spy_works"] and rank_result["torch_rnn_calls"] == 0  # fused path: never torch's RNN
        assert not [w for w in rank_result["warnings"] if "contiguous chunk" in w], rank_result["warnings"]
