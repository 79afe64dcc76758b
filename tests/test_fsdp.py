"""FSDP2 (torch.distributed.fsdp.fully_shard) over fusedrnn.LSTM: two CPU processes (gloo),
each on half the batch, get the gradients and, after a few optimizer steps, the parameters
of one process on the whole batch.

fully_shard turns each parameter into a DTensor sharded on dim 0 and all-gathers the full
weights before the module's forward and backward; fusedrnn reads its weights through
torch.nn's `_flat_weights`, refreshed each forward, so it sees the gathered tensors. The
gradients are reduce-scattered (averaged over ranks), which for a mean loss over equal
halves is the full batch's gradient.
"""
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
from torch import nn

import fusedrnn
import plain_kernels  # registers itself with the custom ops
from spawn_workers import join_gloo, run_workers

fsdp = pytest.importorskip("torch.distributed.fsdp", reason="this torch has no torch.distributed.fsdp")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this torch build has no gloo backend", allow_module_level=True)

WORLD, STEPS, BATCH = 2, 3, 6
# "kernels": the kernel-backend path (custom ops) through the plain-PyTorch stand-in kernels;
# "torch": torch.nn's own LSTM ('auto' on the CPU)
BACKENDS = ["reference", "kernels", "torch"]


class Model(nn.Module):
    def __init__(self, backend):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = fusedrnn.LSTM(3, 5, num_layers=2, bidirectional=True, backend=backend, dtype=torch.float64)
        self.head = nn.Linear(10, 1, dtype=torch.float64)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def batch(step):
    g = torch.Generator().manual_seed(200 + step)
    return torch.randn(4, BATCH, 3, generator=g, dtype=torch.float64), \
        torch.randn(4, BATCH, 1, generator=g, dtype=torch.float64)


def full(t):
    """The whole tensor of a parameter or gradient (all-gathered from a DTensor's shards)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def train(model, rank=0, world=1):
    """STEPS of SGD with momentum on this rank's share of each batch; returns the first step's
    gradients and the final parameters, whole."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    per = BATCH // world
    first_grads = None
    for step in range(STEPS):
        x, target = batch(step)
        sl = slice(rank * per, (rank + 1) * per)
        loss = (model(x[:, sl]) - target[:, sl]).square().mean()
        opt.zero_grad()
        loss.backward()
        if first_grads is None:
            first_grads = [full(p.grad).detach().clone() for p in model.parameters()]
        opt.step()
    return first_grads, [full(p).detach().clone() for p in model.parameters()]


def backend_name(name):
    if name == "kernels":
        fusedrnn.backends.KERNEL_BACKENDS["triton"] = plain_kernels.__name__
        return "triton"
    return name


def worker(rank, port, out_path):
    torch.set_num_threads(1)  # two processes share the cores
    join_gloo(rank, WORLD, port)
    result = {}
    for name in BACKENDS:
        model = Model(backend_name(name))
        fsdp.fully_shard(model.rnn)
        fsdp.fully_shard(model)
        # sharded for real: this rank holds part of each LSTM weight, not all of it
        result[name + "_local_rows"] = [p.to_local().shape[0] for p in model.rnn.parameters()]
        result[name] = train(model, rank, WORLD)
    torch.save(result, f"{out_path}.{rank}")
    dist.destroy_process_group()


def test_fsdp2_two_processes_equals_single_process_on_full_batch(monkeypatch):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result")
        run_workers(worker, WORLD, out)
        results = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    monkeypatch.setitem(fusedrnn.backends.KERNEL_BACKENDS, "triton", plain_kernels.__name__)
    for name in BACKENDS:
        single = Model("triton" if name == "kernels" else name)
        rows = [p.shape[0] for p in single.rnn.parameters()]
        initial = [p.detach().clone() for p in single.parameters()]
        want_grads, want_params = train(single)
        for rank_result in results:
            assert all(r < full_rows for r, full_rows in zip(rank_result[name + "_local_rows"], rows))
            got_grads, got_params = rank_result[name]
            for got, want in zip(got_grads, want_grads):
                torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
            for got, want, init in zip(got_params, want_params, initial):
                torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
                assert not torch.equal(got, init)  # training moved every parameter
