"""The environment variables fusedrnn reads, read once.

fusedrnn reads its switches (FUSEDRNN_BACKEND, FUSEDRNN_CHECK, the CUDA backend's tier knobs,
...; docs/integration.md lists them) from a snapshot of the environment taken at import, never
from os.environ during a call: a call's host path stays a few dictionary lookups. A process
that changes its environment after importing fusedrnn calls `refresh()` to take a new snapshot;
values derived from the old one (parsed knobs, cached plans keyed on them) follow, since they are
keyed on `generation`, which every refresh increments.

    import os, fusedrnn
    os.environ["FUSEDRNN_CHECK"] = "1"
    fusedrnn.settings.refresh()

TRITON_INTERPRET is Triton's own: Triton decides at its import whether kernels run in its CPU
interpreter, so fusedrnn reads it at import as well (a refresh does not change the mode).
"""
from __future__ import annotations

import os

#: the names a snapshot holds: fusedrnn's own, and compute-sanitizer's marker (timeouts.spin_scale)
PREFIXES = ("FUSEDRNN_", "NV_SANITIZER_INJECTION_")

_snapshot: dict = {}
#: incremented by every refresh(): a cache of values derived from the snapshot keys on it
generation = 0


def refresh() -> None:
    """Take a new snapshot of the environment (after os.environ changed in this process)."""
    global _snapshot, generation
    _snapshot = {k: v for k, v in os.environ.items() if k.startswith(PREFIXES)}
    generation += 1


def get(name: str, default: str | None = None) -> str | None:
    """The variable's value in the snapshot, else `default`."""
    return _snapshot.get(name, default)


def flag(name: str) -> bool:
    """Whether the variable is set to "1" in the snapshot."""
    return _snapshot.get(name) == "1"


def any_prefixed(prefix: str) -> bool:
    """Whether the snapshot holds a variable whose name starts with `prefix` (one of PREFIXES)."""
    return any(k.startswith(prefix) for k in _snapshot)


refresh()
