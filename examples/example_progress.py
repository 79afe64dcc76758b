"""The examples' progress bar: tqdm's when tqdm is installed (the `examples` extra), else
plain lines on stderr, so an example runs on a bare fusedrnn install.

    bar = progress(total=steps, disable=quiet)
    bar.update(1); bar.set_postfix(loss="0.123", refresh=False); bar.close()
"""
from __future__ import annotations

import sys
import time


def progress(iterable=None, *, total=None, initial=0, disable=False, unit="step", **tqdm_kw):
    """A tqdm bar over `iterable` (or counting to `total`); without tqdm a PlainProgress."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return PlainProgress(iterable, total=total, initial=initial, disable=disable, unit=unit)
    return tqdm(iterable, total=total, initial=initial, disable=disable, unit=unit, file=sys.stderr, **tqdm_kw)


class PlainProgress:
    """What the examples use of tqdm's interface; prints a line each time the loss is
    posted (every --log-every steps) and at the end, unless that step's line is out."""

    def __init__(self, iterable=None, *, total=None, initial=0, disable=False, unit="step", file=None):
        self.iterable, self.n, self.disable, self.unit = iterable, initial, disable, unit
        self.total = total if total is not None or iterable is None else len(iterable)
        self.file, self.t0, self.postfix, self.shown = file or sys.stderr, time.perf_counter(), "", None

    def __iter__(self):
        for item in self.iterable:
            self.n += 1  # counts the step being run, so a line posted from its body says that step
            yield item
        self.close()

    def update(self, n=1):
        self.n += n

    def set_postfix(self, refresh=True, **values):
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        self._line()

    def close(self):
        if self.n != self.shown:  # the last step, unless its line is out already
            self._line()
        self.disable = True  # closed, like tqdm's

    def _line(self):
        if self.disable:
            return
        self.shown = self.n
        rate = self.n / max(time.perf_counter() - self.t0, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        print(f"{self.n}{of} {self.unit}s, {rate:.1f} {self.unit}/s{', ' + self.postfix if self.postfix else ''}",
              file=self.file, flush=True)
