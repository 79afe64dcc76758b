"""DistributedDataParallel over fusedrnn.LSTM: two CPU processes (gloo) each training on
half the batch end with the parameters of one process training on the whole batch.

What this can show on the CPU: the fused path trains correctly under DDP (gradient
hooks, bucketing and parameter broadcast all see ordinary Parameters), it never
enters torch's own RNN kernels (`_VF.lstm`, where cuDNN raises "RNN module weights
are not part of single contiguous chunk of memory"), and no warning of that kind is
emitted. The warning itself only exists on CUDA; tests/gpu/test_integration_gpu.py
checks it there with non-contiguous weights.
"""
import warnings

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import fusedrnn
from support import plain_kernels  # registers itself with the custom ops
from support.distributed_model import Model, backend_name, batch, train
from support.spawn_workers import join_gloo, worker_results

WORLD = 2
BACKENDS = ["reference", "kernels"]


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
    results = worker_results(worker, WORLD)
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
