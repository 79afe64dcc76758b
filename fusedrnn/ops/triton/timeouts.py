"""The grid barrier's timeout flag, reported by the kernel backends' shared policy
(fusedrnn/ops/timeouts.py: at once on the CPU or when checked, lazily otherwise, after a
replay inside a watch).

A barrier-grid launch gets its own zeroed sync buffer (per call: no launch state is
shared between calls or threads); its last int is the timeout flag the kernel raises
when a wait gives up (kernels latch it and finish quickly). FUSEDRNN_CHECK=1 (the policy's
debug switch) checks every launch synchronously.
"""
from __future__ import annotations

import torch

from .. import timeouts as policy
from . import config


def new_sync(n_batch_tiles: int, device) -> torch.Tensor:
    """A zeroed (n_batch_tiles + 1,) int32 buffer: a counter per batch tile, then the flag."""
    return torch.zeros(n_batch_tiles + 1, dtype=torch.int32, device=device)


def _describe(what: str):
    def describe(words: list) -> str | None:
        if not words[0]:
            return None
        return (f"fusedrnn triton: a grid barrier timed out in {what}; its programs were not all running at once "
                "(or a kernel bug stopped one). The results of that call are wrong.")
    return describe


def after_launch(sync: torch.Tensor, launch, what: str) -> None:
    """Hand the timeout flag of the launch that used `sync` to the shared policy."""
    if launch.BARRIER:
        policy.after_launch(sync[-1:], what, _describe(what))


def check(block: bool = False) -> None:
    """Raise RuntimeError if a finished launch (of either kernel backend) timed out (block: wait for all)."""
    policy.check(block)


def spin_limit() -> int:
    """The barrier polls per step a launch gets: TUNING["spin_limit"] scaled for the tool running
    (policy.spin_scale), within the kernels' int32 argument."""
    return policy.scaled(config.TUNING["spin_limit"], 2**31 - 1)
