"""Leak check of the kernel paths themselves (tests/test_memory.py runs the same idea on the
plain-PyTorch stand-in): repeated forward+backward through the Triton kernels in the
interpreter and through the CUDA kernels in the emulator (csrc/ built for the host), at tiny
sizes so that it runs in CI. After a warm-up:
  - every tensor autograd saved in an iteration (the custom op's activations included) is
    freed once that iteration's graph is gone — the precise check, it sees tensors that only
    C++ holds;
  - the number of live Python tensors does not grow;
  - resident memory grows by less than RSS_LIMIT (coarse at these sizes: it catches what
    leaks about RSS_LIMIT / ITERS or more per iteration, e.g. per-launch buffers).
"""
from __future__ import annotations

import gc
import weakref

import pytest
import torch

import fusedrnn
from support import plain_kernels
from support.backend_params import needs_triton
from support.memory import rss

WARMUP, ITERS = 2, 10
RSS_LIMIT = 4 * 2**20


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def leak_check(backend: str, keep: list | None = None) -> tuple[int, int, int]:
    """(saved tensors still alive after the loop, growth of live tensors, growth of RSS in
    bytes) over ITERS forward+backward calls after WARMUP; `keep` holds on to every saved
    tensor (the leak the check must see)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: intra-op threads only spin
    try:
        torch.manual_seed(0)
        model = fusedrnn.LSTM(3, 5, backend=backend)  # H = 5: odd
        x = torch.randn(2, 3, 3)
        inputs = {t.untyped_storage().data_ptr() for t in (x, *model.parameters())}  # alive by design
        saved, tensors, start = [], 0, 0

        def pack(t):
            if t.untyped_storage().data_ptr() not in inputs:
                saved.append(weakref.ref(t))
            if keep is not None:
                keep.append(t)
            return t
        for it in range(WARMUP + ITERS):
            if it == WARMUP:
                saved.clear()
                tensors, start = live_tensors(), rss()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                y, (h, c) = model(x)
            (y.square().sum() + c.sum()).backward()
            model.zero_grad(set_to_none=True)
        assert saved, "autograd saved no activation: the check would see nothing"
        del y, h, c
        tensors, grown = live_tensors() - tensors, rss() - start
        return sum(r() is not None for r in saved), tensors, grown
    finally:
        torch.set_num_threads(threads)


def assert_flat(backend: str) -> None:
    alive, tensors, grown = leak_check(backend)
    assert alive == 0, f"{alive} activations saved for backward outlived their iteration"
    assert tensors <= 0, f"{tensors} more live tensors after {ITERS} iterations"
    assert grown < RSS_LIMIT, f"RSS grew {grown / 2**20:.2f} MiB over {ITERS} iterations"


def test_the_check_sees_a_leak(monkeypatch):
    """The stand-in kernels with every saved tensor kept: the saved-tensor and live-tensor
    measures must trip (a leak this small is below what RSS can show)."""
    keep = []
    alive, tensors, _ = leak_check(plain_kernels.install(monkeypatch), keep)
    assert alive >= ITERS and tensors >= ITERS


@needs_triton
def test_triton_kernels_in_the_interpreter_do_not_leak():
    assert_flat("triton")


def test_emulated_cuda_kernels_do_not_leak(cuda_kernels):
    assert_flat(cuda_kernels)
