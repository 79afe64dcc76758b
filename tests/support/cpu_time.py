"""`pytest --cpu-durations=N`: the N test files and tests that took the most CPU time
(user + system, this process and the subprocesses it waited for). On a machine shared with
other work, wall-clock durations measure the neighbours; CPU time measures the test. On an
idle machine with C cores a run takes about CPU time / C where it runs in parallel and its
CPU time where it does not; both are printed. Each test's CPU time is also written as it
finishes to build/test-cpu-times.txt, so that a run cut short still tells where time went
(under `pytest -n N`, each worker to build/test-cpu-times-gwK.txt; the summary adds them up)."""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

from support import workers


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def pytest_addoption(parser):
    parser.addoption("--cpu-durations", type=int, default=None, metavar="N",
                     help="print the N slowest test files and tests by CPU time (user+sys, with subprocesses)")


class _Recorder:
    def __init__(self, config, n: int):
        self.config, self.n, self.per_test, self.start = config, n, {}, _cpu()
        self.own_start = os.times().user + os.times().system
        self.totals = {"cpu": 0.0}  # this process's CPU time so far, for the controller under xdist
        worker = f"-{config.workerinput['workerid']}" if workers.is_worker(config) else ""
        # under the run's root: a pytester run of this plugin (tests/test_tiers.py) writes under
        # its own folder instead of over the checkout's record
        log = Path(config.rootpath) / "build" / f"test-cpu-times{worker}.txt"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(log, "w", buffering=1)
        workers.send(config, "fusedrnn_cpu_per_test", self.per_test)
        workers.send(config, "fusedrnn_cpu_total", self.totals)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        t0 = _cpu()
        yield
        self.per_test[item.nodeid] = _cpu() - t0  # setup, call and teardown: module fixtures count once
        self.log.write(f"{self.per_test[item.nodeid]:.2f} {item.nodeid}\n")
        self.totals["cpu"] = _cpu() - self.start

    def pytest_terminal_summary(self, terminalreporter):
        total = _cpu() - self.start
        from_workers = workers.received(self.config, "fusedrnn_cpu_total")
        if from_workers:  # the workers are this process's children, reaped by now: count each once
            t = os.times()
            total = t.user + t.system - self.own_start + sum(w["cpu"] for w in from_workers)
        per_test = dict(self.per_test)
        for part in workers.received(self.config, "fusedrnn_cpu_per_test"):
            per_test.update(part)
        per_file: dict[str, float] = defaultdict(float)
        for nodeid, s in per_test.items():
            per_file[nodeid.split("::")[0]] += s
        w = terminalreporter
        w.section(f"CPU time (user+sys, with subprocesses): {total:.0f} s in all, "
                  f"{total / (os.cpu_count() or 1):.0f} s over {os.cpu_count()} cores")
        for name, s in sorted(per_file.items(), key=lambda kv: -kv[1])[:self.n]:
            w.write_line(f"{s:9.1f} s  {name}")
        w.write_line("slowest tests:")
        for name, s in sorted(per_test.items(), key=lambda kv: -kv[1])[:self.n]:
            w.write_line(f"{s:9.1f} s  {name}")


def pytest_configure(config):
    n = config.getoption("--cpu-durations")
    if n:
        config.pluginmanager.register(_Recorder(config, n), "fusedrnn-cpu-durations")
