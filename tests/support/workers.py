"""`pytest -n N` (pytest-xdist; the README's test command runs `-n 2`): the worker processes
collect and run the tests, the controller prints the summary. The plugins of tests/support
that print one (sampling, tiers, cpu_time) take their numbers where the tests are, so a worker
hands them on with `send`, and the controller reads every worker's with `received`. Without
xdist both are no-ops: the plugin's own process has the numbers."""
from __future__ import annotations

import pytest


def is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def send(config, key: str, value) -> None:
    """In a worker, hand `value` (plain data; a dict may still grow) to the controller."""
    if is_worker(config):
        config.workeroutput[key] = value


def received(config, key: str) -> list:
    """In the controller, every finished worker's value for `key`."""
    return [out[key] for out in getattr(config, "_fusedrnn_worker_outputs", []) if key in out]


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: declared only where it is installed
def pytest_testnodedown(node, error):
    node.config.__dict__.setdefault("_fusedrnn_worker_outputs", []).append(getattr(node, "workeroutput", {}))
