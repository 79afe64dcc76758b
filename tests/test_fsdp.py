"""FSDP2 (torch.distributed.fsdp.fully_shard) over fusedrnn.LSTM: two CPU processes (gloo),
each on half the batch, get the gradients and, after four optimizer steps, the parameters
of one process on the whole batch.

fully_shard turns each parameter into a DTensor sharded on dim 0 and all-gathers the full
weights before the module's forward and backward; fusedrnn reads its weights through
torch.nn's `_flat_weights`, refreshed each forward, so it sees the gathered tensors. The
gradients are reduce-scattered (averaged over ranks), which for a mean loss over equal
halves is the full batch's gradient.
"""

import pytest
import torch
import torch.distributed as dist

import fusedrnn
from support import plain_kernels
from support.distributed_model import Model, backend_name, train
from support.spawn_workers import join_gloo, worker_results

fsdp = pytest.importorskip("torch.distributed.fsdp", reason="this torch has no torch.distributed.fsdp")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this torch build has no gloo backend", allow_module_level=True)

WORLD = 2
# "kernels": the kernel-backend path (custom ops) through the plain-PyTorch stand-in kernels;
# "torch": torch.nn's own LSTM ('auto' on the CPU)
BACKENDS = ["reference", "kernels", "torch"]


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
    results = worker_results(worker, WORLD)
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
