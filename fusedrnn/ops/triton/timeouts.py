"""Grid-barrier timeouts surfaced as RuntimeErrors without stalling the stream.

A barrier-grid launch gets its own zeroed sync buffer (per call: no launch state is
shared between calls or threads); its last int is the timeout flag the kernel raises
when a wait gives up (kernels latch it and finish quickly). Reading that int right
after the launch would cost a host synchronisation per call and cannot happen during
CUDA-graph capture, so the check is lazy: after each eager launch the flag is copied
asynchronously into pinned host memory behind a CUDA event; every later launch (any
thread) and `check(block=True)` look at the copies whose event has completed and raise
for a set flag. A timeout therefore raises on the next call into the backend at the
latest. Under capture nothing is read back (the launch is cooperative, so a lost
co-residency fails at launch; a latched timeout cannot hang a replay). In debug mode
(config.DEBUG) and for CPU tensors (the interpreter) the flag is read at once.
"""
from __future__ import annotations

import threading

import torch

from . import config

_pending: list = []  # (event, pinned host copy of the flag, what was launched)
_lock = threading.Lock()


def new_sync(n_batch_tiles: int, device) -> torch.Tensor:
    """A zeroed (n_batch_tiles + 1,) int32 buffer: a counter per batch tile, then the flag."""
    return torch.zeros(n_batch_tiles + 1, dtype=torch.int32, device=device)


def _error(what: str) -> RuntimeError:
    return RuntimeError(f"fusedrnn triton: a grid barrier timed out in {what}; its programs were not all "
                        "running at once (or a kernel bug stopped one). The results of that call are wrong.")


def after_launch(sync: torch.Tensor, launch, what: str) -> None:
    """Queue (or do) the timeout check of the launch that used `sync`."""
    if not launch.BARRIER:
        return
    flag = sync[-1:]
    if config.DEBUG or flag.device.type != "cuda":
        if int(flag.item()) != 0:
            raise _error(what)
        return
    if torch.cuda.is_current_stream_capturing():
        return
    host = torch.empty(1, dtype=torch.int32, pin_memory=True)
    host.copy_(flag, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    with _lock:
        _pending.append((event, host, what))


def check(block: bool = False) -> None:
    """Raise RuntimeError if a finished launch's barrier timed out (block: wait for all)."""
    with _lock:
        if not _pending:
            return
        if not block and torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            return
        ready = [p for p in _pending if block or p[0].query()]
        for p in ready:
            _pending.remove(p)
    failed = None
    for event, host, what in ready:
        event.synchronize()
        if int(host[0]) != 0 and failed is None:
            failed = what
    if failed is not None:
        raise _error(failed)
