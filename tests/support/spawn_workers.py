"""Run a test's worker function in two (or more) spawned CPU processes joined by gloo, with a
deadline: a hung collective fails the test instead of hanging the suite."""
import os
import socket
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_gloo(rank: int, world: int, port: int) -> None:
    """In a worker: join the gloo process group of `world` processes at 127.0.0.1:`port`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)


def run_workers(worker, world: int, *args, timeout: float = 60) -> None:
    """Spawn `worker(rank, port, *args)` in `world` processes; AssertionError past `timeout` s."""
    ctx = mp.spawn(worker, args=(free_port(), *args), nprocs=world, join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise AssertionError(f"{worker.__name__}: workers did not finish within {timeout} s")


def worker_results(worker, world: int, timeout: float = 60) -> list:
    """Run `worker(rank, port, out_path)`, which saves its result with
    `torch.save(result, f"{out_path}.{rank}")`, in `world` processes; the results by rank."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result")
        run_workers(worker, world, out, timeout=timeout)
        return [torch.load(f"{out}.{rank}") for rank in range(world)]
