"""One timeout policy for both kernel backends (fusedrnn/ops/timeouts.py), on the CPU.

A real timeout comes from the Triton kernels in the sequential interpreter (a forced barrier
grid: program 0 waits for programs that have not started and gives up after a few polls);
the report is then handled as on a GPU (`gpu_like`: synchronising and queueing are recorded
instead of done; `capturing` pretends a CUDA-graph capture is under way). The CUDA kernels'
forced timeout runs through the emulator in tests/test_cuda_emulated.py.
"""
from __future__ import annotations

import os
import re

import pytest
import torch

import fusedrnn
from fusedrnn.ops import cuda as cuda_ops
from fusedrnn.ops import timeouts
from fusedrnn.ops import triton as tri
from fusedrnn.ops.triton import config
from support.triton_barrier import grid_launch
from support.triton_recurrence import make_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMED_OUT = "grid barrier timed out in the rnn_tanh forward"


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch):
    for name in (timeouts.CHECK_ENV, *timeouts.CHECK_ALIASES, timeouts.POISON_ALIAS, timeouts.SCALE_ENV, cuda_ops.SPIN_ENV):
        monkeypatch.delenv(name, raising=False)
    for name in [k for k in os.environ if k.startswith(timeouts.SANITIZER_ENV_PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(timeouts, "_pending", [])


@pytest.fixture
def gpu_like(monkeypatch):
    """Reports handled as a GPU's: what would be synchronised or queued is recorded."""
    seen = {"synchronized": 0, "queued": []}
    monkeypatch.setattr(timeouts, "_asynchronous", lambda words: True)
    monkeypatch.setattr(timeouts, "_synchronize", lambda device: seen.__setitem__("synchronized",
                                                                                  seen["synchronized"] + 1))
    monkeypatch.setattr(timeouts, "_queue", lambda report: seen["queued"].append(report))
    return seen


@pytest.fixture
def capturing(monkeypatch):
    monkeypatch.setattr(timeouts, "_capturing", lambda: True)


@pytest.fixture
def timing_out(monkeypatch):
    """A Triton forward whose barrier times out (needs the interpreter)."""
    if not config.INTERPRET:
        pytest.skip("forces a timeout with sequential interpreter programs")
    launch = grid_launch("rnn_tanh", 3, 20)
    monkeypatch.setattr(config, "choose", lambda *a, **k: launch)
    monkeypatch.setitem(config.TUNING, "spin_limit", 16)
    (gx, h0, _, w, _), _ = make_args("rnn_tanh", 2, 3, 20, torch.float32, lengths=False, bias=False)
    gx, h0, w = gx.detach(), h0.detach(), w.detach()
    return lambda: tri.forward("rnn_tanh", gx, h0, None, w, None, None, False, False)


@pytest.mark.parametrize("switch", [timeouts.CHECK_ENV, *timeouts.CHECK_ALIASES])
def test_a_checked_launch_raises_from_the_call_that_timed_out(switch, monkeypatch, gpu_like, timing_out):
    """FUSEDRNN_CHECK=1 (or FUSEDRNN_CUDA_CHECK=1, FUSEDRNN_DEBUG=1): synchronised at once."""
    monkeypatch.setenv(switch, "1")
    with pytest.raises(RuntimeError, match=TIMED_OUT):
        timing_out()
    assert gpu_like["synchronized"] == 1 and gpu_like["queued"] == []


def test_an_unchecked_launch_is_reported_once_it_has_finished(gpu_like, timing_out, monkeypatch):
    """No synchronisation per call: the report waits in the queue; check() raises for it once
    its event has completed (block=True waits), naming the call, and forgets it."""
    y = timing_out()[0]
    assert gpu_like["synchronized"] == 0 and len(gpu_like["queued"]) == 1
    (report,) = gpu_like["queued"]

    class Event:
        def __init__(self, done):
            self.done = done

        def query(self):
            return self.done

        def synchronize(self):
            self.done = True

    clean = report._replace(words=torch.zeros(1, dtype=torch.int32), what="a clean launch")
    monkeypatch.setattr(timeouts, "_pending", [timeouts._Pending(Event(False), report.words.clone(), report),
                                               timeouts._Pending(Event(True), clean.words, clean)])
    fusedrnn.check_timeouts(block=False)  # the launch that timed out has not finished yet
    assert len(timeouts._pending) == 1
    with pytest.raises(RuntimeError, match=TIMED_OUT + ".*found after the call returned"):
        fusedrnn.check_timeouts(block=True)
    assert timeouts._pending == [] and y.shape == (2, 3, 20)


def test_a_captured_launch_is_checked_after_the_replay_inside_a_watch(gpu_like, capturing, timing_out):
    """Under capture nothing is read; a watch keeps the report and raises from check()."""
    with fusedrnn.watch_timeouts() as watch:
        timing_out()
    assert len(watch) == 1 and gpu_like["synchronized"] == 0 and gpu_like["queued"] == []
    with pytest.raises(RuntimeError, match=TIMED_OUT + r".*\(in a CUDA-graph replay\)"):
        watch.check()
    assert gpu_like["synchronized"] == 1
    timing_out()  # no watch open: the replay is unchecked (documented), nothing kept or raised
    assert len(watch) == 1 and gpu_like["queued"] == []


def test_watches_are_per_thread_and_close():
    import threading
    with timeouts.watch() as mine:
        seen = []
        t = threading.Thread(target=lambda: seen.append(list(getattr(timeouts._local, "watches", []))))
        t.start()
        t.join()
        assert seen == [[]] and timeouts._local.watches == [mine]
    assert timeouts._local.watches == []


# -- spin limits scale with the tool running -----------------------------------------------

def _triton_spin(cell="lstm"):
    n = tri.launch.Sizes(4, 3, 20, 20, 1)
    return tri.launch.fwd_args(cell, grid_launch(cell, 3, 20), *[None] * 12, n, False, True)[0][-1]


def test_spin_limits_scale_with_the_environment(monkeypatch):
    base = config.TUNING["spin_limit"]
    assert _triton_spin() == base and cuda_ops._knobs()["spin_limit"] == 0  # 0: the extension's default
    monkeypatch.setenv(timeouts.SCALE_ENV, "4")
    assert _triton_spin() == 4 * base
    assert cuda_ops._knobs()["spin_limit"] == 4 * cuda_ops.DEFAULT_SPIN_CYCLES
    monkeypatch.setenv(cuda_ops.SPIN_ENV, "1000")  # an explicit CUDA limit is used as given
    assert cuda_ops._knobs()["spin_limit"] == 1000
    monkeypatch.setenv(timeouts.SCALE_ENV, "1e12")  # within the Triton kernels' int32 argument
    assert _triton_spin() == 2**31 - 1
    for bad in ("0", "-2", "nan", "inf", "fast"):
        monkeypatch.setenv(timeouts.SCALE_ENV, bad)
        with pytest.raises(ValueError, match=f"{timeouts.SCALE_ENV}=.* must be a positive finite number"):
            _triton_spin()


def test_spin_limits_scale_under_compute_sanitizer(monkeypatch):
    """compute-sanitizer sets NV_SANITIZER_INJECTION_* for the program it checks."""
    monkeypatch.setenv("NV_SANITIZER_INJECTION_PORT_BASE", "49152")
    assert _triton_spin() == timeouts.SANITIZER_SCALE * config.TUNING["spin_limit"]
    assert cuda_ops._knobs()["spin_limit"] == timeouts.SANITIZER_SCALE * cuda_ops.DEFAULT_SPIN_CYCLES
    monkeypatch.setenv(timeouts.SCALE_ENV, "2")  # an explicit scale wins
    assert _triton_spin() == 2 * config.TUNING["spin_limit"]


def test_the_cuda_default_spin_limit_is_the_extensions():
    with open(os.path.join(ROOT, "csrc", "recurrence.cuh")) as f:
        found = re.search(r"kDefaultSpinLimit = 1LL << (\d+);", f.read())
    assert found and cuda_ops.DEFAULT_SPIN_CYCLES == 1 << int(found.group(1))
