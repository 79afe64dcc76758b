"""Timers and the interleaved timing loop.

On a GPU every call is timed with a pair of CUDA events recorded on the current stream
around it; the device is synchronised before each timed call (outside the timed region),
so a time is the latency of one call from an idle GPU: host launch overhead that the GPU
waits for is included, queued work from earlier calls is not. On the CPU nothing is
asynchronous and a host clock (time.perf_counter) is exact enough.

`bench_interleaved` warms every runner up, then runs repetition r of every runner before
repetition r+1 of any (rotating which goes first), so clock or thermal drift hits all
providers alike. Each runner's `prepare()` (fresh random inputs, dropped gradients,
packing) runs outside the timed region. After each call, outside the timed region, the
timer's `check()` fails that runner if one of its kernels timed out (fusedrnn's timeout
policy, docs/integration.md), so a wrong result is never timed as a fast one.
"""
from __future__ import annotations

import time
from typing import Callable, Protocol


class Runner(Protocol):
    def prepare(self): ...          # untimed: returns the arguments of one call
    def run(self, args) -> None: ...  # timed


class HostTimer:
    """time.perf_counter around each call (CPU only: nothing runs asynchronously there)."""
    description = "host timer (time.perf_counter; CPU execution is synchronous)"

    def sync(self) -> None:
        pass

    def start(self):
        return time.perf_counter()

    def stop(self, token):
        return (time.perf_counter() - token) * 1e3

    def elapsed_ms(self, handle) -> float:
        return handle

    def check(self) -> None:
        pass  # on the CPU a kernel's timeout raises from its own call


class CudaEventTimer:
    """torch.cuda.Event pairs on the current stream; read after one synchronize."""
    description = ("CUDA events around each call on the current stream, device synchronised "
                   "before each timed call (outside the timed region)")

    def __init__(self):
        import torch  # noqa: PLC0415
        self._torch = torch

    def sync(self) -> None:
        self._torch.cuda.synchronize()

    def start(self):
        ev = self._torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def stop(self, token):
        end = self._torch.cuda.Event(enable_timing=True)
        end.record()
        return token, end

    def elapsed_ms(self, handle) -> float:
        start, end = handle
        return start.elapsed_time(end)

    def check(self) -> None:
        """Synchronise and raise RuntimeError if a fusedrnn kernel launched so far timed out."""
        from fusedrnn.ops import timeouts  # noqa: PLC0415
        self._torch.cuda.synchronize()
        timeouts.check(block=True)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def bench_interleaved(runners: dict, timer, warmup: int = 3, reps: int = 20,
                      divide_by: int = 1, on_error: Callable[[str, str], None] | None = None) -> tuple[dict, dict]:
    """Time each runner `reps` times, interleaved. Returns (times, errors): times maps a
    runner's name to its list of milliseconds (each divided by `divide_by`, e.g. steps per
    call), errors maps the name of a runner that raised to the reason (it is not timed)."""
    if reps < 1 or warmup < 0:
        raise ValueError(f"need reps >= 1 and warmup >= 0, got reps={reps}, warmup={warmup}")
    errors: dict[str, str] = {}
    live = []
    for name, runner in runners.items():
        try:
            for _ in range(warmup):
                runner.run(runner.prepare())
            timer.sync()
            timer.check()
            live.append(name)
        except Exception as e:  # an OOM, a kernel that refuses the shape, ...
            errors[name] = "warm-up failed: " + _describe(e)
            if on_error:
                on_error(name, errors[name])
    handles: dict[str, list] = {name: [] for name in live}
    for r in range(reps):
        order = live[r % len(live):] + live[: r % len(live)] if live else []
        for name in order:
            if name in errors:
                continue
            runner = runners[name]
            try:
                args = runner.prepare()
                timer.sync()
                token = timer.start()
                runner.run(args)
                handles[name].append(timer.stop(token))
                timer.check()  # after the stop event: outside the timed region
                del args
            except Exception as e:
                errors[name] = f"failed in repetition {r}: " + _describe(e)
                if on_error:
                    on_error(name, errors[name])
    timer.sync()
    times = {name: [timer.elapsed_ms(h) / divide_by for h in hs]
             for name, hs in handles.items() if name not in errors}
    return times, errors
