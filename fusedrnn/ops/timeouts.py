"""Kernel timeouts and error reports: one policy for both kernel backends.

A kernel whose CTAs or programs wait for each other (the CUDA grid tier, a Triton barrier
grid) gives up a wait after a spin limit, latches the failure (later waits return at once, so
the kernel ends) and writes an error report into a small device buffer of its launch (zero:
no error). The launcher hands that buffer to `after_launch`, which reports it:

- on the CPU (Triton's interpreter, the emulated CUDA kernels) the launch has finished when
  it returns: a report raises RuntimeError from that call;
- checked (FUSEDRNN_CHECK=1, fusedrnn's one debug switch; FUSEDRNN_CUDA_CHECK=1 and FUSEDRNN_DEBUG=1
  are older names for it): launchers NaN-fill every output first (`poisoning`, so an element a
  kernel failed to write shows), and the device is synchronised after every launch, so a timeout (or, CUDA, an asynchronous
  fault) raises from the call that launched the kernel;
- unchecked (the default, no synchronisation per call): the report is copied to pinned host
  memory behind a CUDA event; the next launch of either kernel backend (any thread), and
  `check(block=True)` (`fusedrnn.check_timeouts()`), raise for a finished launch whose report
  is set, naming that launch. The timed-out call's results must not be used (the CUDA
  kernels write NaN from the step that timed out; Triton's are undefined);
- during CUDA-graph capture nothing can be read. Inside `watch()` the reports of captured
  launches are kept (and so stay allocated in the graph's pool), and `Watch.check()` after a
  replay synchronises and raises for a launch that timed out in the latest replay (every
  replay zeroes its reports first). Outside a watch, replays are unchecked.

Spin limits scale with the tool the process runs under: each backend's default is multiplied
by FUSEDRNN_TIMEOUT_SCALE, or by SANITIZER_SCALE under compute-sanitizer (which sets
NV_SANITIZER_INJECTION_* in the environment of the program it checks): the CUDA kernels' clock
cycles (csrc's default, unless FUSEDRNN_CUDA_SPIN_LIMIT gives a number, used as given) and
Triton's barrier polls (config.TUNING["spin_limit"]).
"""
from __future__ import annotations

import threading
from typing import Callable, NamedTuple

import torch

from .. import settings

CHECK_ENV = "FUSEDRNN_CHECK"
#: older switches that also turn checking on: the CUDA backend's, and the Triton debug mode
CHECK_ALIASES = ("FUSEDRNN_CUDA_CHECK", "FUSEDRNN_DEBUG")
#: an older switch of the CUDA backend: NaN-filled outputs alone (FUSEDRNN_CHECK=1 fills them too)
POISON_ALIAS = "FUSEDRNN_CUDA_POISON"
SCALE_ENV = "FUSEDRNN_TIMEOUT_SCALE"
#: the factor on the default spin limits under compute-sanitizer (its instrumentation stalls CTAs)
SANITIZER_SCALE = 64
SANITIZER_ENV_PREFIX = "NV_SANITIZER_INJECTION_"

Describe = Callable[[list], "str | None"]


class Report(NamedTuple):
    words: torch.Tensor   # int32 on the launch's device, written by the kernel (0: no error)
    what: str             # the launch, for the message
    describe: Describe    # the words as a sentence, or None when they report nothing


class _Pending(NamedTuple):
    event: object         # torch.cuda.Event recorded after the copy
    host: torch.Tensor    # pinned copy of the words
    report: Report


_pending: list = []
_lock = threading.Lock()
_local = threading.local()  # .watches: the watches open in this thread


def checking() -> bool:
    """Whether every launch is synchronised and checked (FUSEDRNN_CHECK=1 or an alias)."""
    return any(settings.flag(name) for name in (CHECK_ENV, *CHECK_ALIASES))


def poisoning() -> bool:
    """Whether launchers fill every output with NaN before a launch, so that an element a kernel
    failed to write shows: when checking(), and under the older FUSEDRNN_CUDA_POISON=1."""
    return checking() or settings.flag(POISON_ALIAS)


def spin_scale() -> float:
    """The factor on the default spin limits: FUSEDRNN_TIMEOUT_SCALE, else SANITIZER_SCALE
    under compute-sanitizer, else 1."""
    text = settings.get(SCALE_ENV, "")
    if text:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise ValueError(f"{SCALE_ENV}={text!r} must be a positive finite number")
        return value
    return float(SANITIZER_SCALE) if settings.any_prefixed(SANITIZER_ENV_PREFIX) else 1.0


def scaled(default: int, cap: int) -> int:
    """`default` times spin_scale(), at least 1 and at most `cap`."""
    return max(1, min(cap, int(default * spin_scale())))


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _asynchronous(words: torch.Tensor) -> bool:
    """Whether the launch may still be running when its call returns (a CUDA device)."""
    return words.device.type == "cuda"


def _synchronize(device) -> None:
    torch.cuda.synchronize(device)  # an asynchronous kernel fault also surfaces here


def _queue(report: "Report") -> None:
    """Copy the report to pinned host memory behind an event: read by check() once it has completed."""
    host = torch.empty(report.words.shape, dtype=report.words.dtype, pin_memory=True)
    host.copy_(report.words, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    with _lock:
        _pending.append(_Pending(event, host, report))


def _raise_if_set(words: list, report: Report, where: str = "") -> None:
    message = report.describe(words)
    if message:
        raise RuntimeError(message + where)


def after_launch(words: torch.Tensor, what: str, describe: Describe, waits: bool = True) -> None:
    """Report (now, later or after a replay, per the module's policy) the launch that
    writes its error report into `words`. `waits`: the kernel can time out (else only a
    checked launch is synchronised, for its asynchronous faults)."""
    report = Report(words, what, describe)
    if _capturing():
        if waits:
            for w in getattr(_local, "watches", ()):
                w._reports.append(report)
        return
    if not _asynchronous(words):
        _raise_if_set(words.tolist(), report)
    elif checking():
        _synchronize(words.device)
        _raise_if_set(words.tolist(), report)
    elif waits:
        _queue(report)


def check(block: bool = False) -> None:
    """Raise RuntimeError for the first earlier launch whose report is set, among those that
    have finished (block=True: wait for all of them). Every report looked at is dropped."""
    with _lock:
        if not _pending or (not block and _capturing()):
            return
        ready = [p for p in _pending if block or p.event.query()]
        for p in ready:
            _pending.remove(p)
    failed = None
    for p in ready:
        p.event.synchronize()
        if failed is None and p.report.describe(p.host.tolist()):
            failed = p
    if failed is not None:
        _raise_if_set(failed.host.tolist(), failed.report, " (found after the call returned: its results were wrong)")


class Watch:
    """Keeps the error reports of the kernel launches captured in a CUDA graph while it is
    open (in this thread), so that `check()` can read them after a replay:

        with fusedrnn.watch_timeouts() as watch, torch.cuda.graph(g):
            y = model(x)
        g.replay()
        watch.check()    # synchronises; RuntimeError if a captured launch timed out in this replay
    """

    def __init__(self):
        self._reports: list = []

    def __enter__(self) -> "Watch":
        if not hasattr(_local, "watches"):
            _local.watches = []
        _local.watches.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _local.watches.remove(self)

    def __len__(self) -> int:
        """How many captured launches it checks."""
        return len(self._reports)

    def check(self) -> None:
        """Wait for the devices of the captured launches, then raise RuntimeError for the first
        whose report is set (by the latest replay)."""
        for device in {r.words.device for r in self._reports if _asynchronous(r.words)}:
            _synchronize(device)
        for r in self._reports:
            _raise_if_set(r.words.tolist(), r, " (in a CUDA-graph replay)")


def watch() -> Watch:
    """A Watch to open around a CUDA-graph capture (see Watch)."""
    return Watch()
