"""`python -m benchmarks.host_overhead`: the host cost of fusedrnn's Python per decode call,
as a ratio to torch.nn's whole call (any machine, no GPU needed).

A decode step is mostly host time (docs/anchors.md: cuDNN 155 µs per 2-layer step, nearly all
overhead), so fusedrnn's path from `module(x, state)` to its kernel launches is timed on its
own: a stand-in kernel backend takes the kernels' place. Like the Triton and CUDA backends it
exports forward, backward and the fused decode `step`, and it runs the same shared argument
check of a step; it allocates its outputs, as a real launcher does, and computes nothing. The
sizes are tiny (B=1, H=8), where torch.nn's own CPU arithmetic is cheap, and torch.nn is timed
with that arithmetic included.

Cases (each printed as fusedrnn's µs, torch.nn's µs and their ratio):

    cell x2        two LSTMCell steps, no grad (a 2-layer decode step built from cells)
    lstm T=1       a 2-layer LSTM called with T=1, no grad
    lstm T=1 grad  a 2-layer LSTM at T=1 with autograd: forward, then backward

fusedrnn and torch.nn are timed in turns within each repeat (the machine's load drifts), and
each ratio is the median over repeats of the paired ratios. The output ends with one line per
case, `ratio <case>: X.XX`. Time is this thread's CPU time (one thread: torch.set_num_threads(1)),
so other processes on a shared machine do not count; a GPU host runs the same Python, faster.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch

import fusedrnn
from fusedrnn import backends, cell_table
from fusedrnn.ops import library, step_args

H, B, LAYERS = 8, 1, 2
STAND_IN = __name__
CASES = ("cell x2", "lstm T=1", "lstm T=1 grad")


# -- the stand-in kernel backend: the contract's interface, outputs allocated, nothing computed --

def availability(device):
    return None


def unsupported(cell, dtype, hidden_size, proj_size=0, directions=1):
    return None if directions == 1 else "the stand-in runs one direction per call"


def saved_shapes(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
    return []


def forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
    T, Bx, GH = gx.shape
    Hx = GH // cell_table.gates(cell)
    y = gx.new_empty(T, Bx, Hx)
    return y, gx.new_empty(Bx, Hx), (gx.new_empty(Bx, Hx) if c0 is not None else None), ()


def backward(cell, dy, dhT, dcT, gx, h0, c0, w_hh, b_hh, lengths, reverse, y, saved):
    d_gx = torch.empty_like(gx)
    return d_gx, d_gx, torch.empty_like(h0), (torch.empty_like(c0) if c0 is not None else None)


def step(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    Bx, _, Hx = step_args.check(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh)  # as both real backends
    return x.new_empty(Bx, Hx), (x.new_empty(Bx, Hx) if c0 is not None else None)


@contextlib.contextmanager
def stand_in_registered():
    """The stand-in as backend "stand-in" for the duration (fusedrnn's tables restored after)."""
    saved = backends.BACKENDS, dict(backends.KERNEL_BACKENDS)
    library.register_kernels(STAND_IN)  # the custom ops run only registered modules
    backends.KERNEL_BACKENDS["stand-in"] = STAND_IN
    backends.BACKENDS = (*saved[0], "stand-in")
    try:
        yield
    finally:
        backends.BACKENDS = saved[0]
        backends.KERNEL_BACKENDS.clear()
        backends.KERNEL_BACKENDS.update(saved[1])


def _pairs():
    """{case: (fusedrnn's call, torch.nn's call)}, each a no-argument function."""
    torch.manual_seed(0)
    fused_lstm = fusedrnn.LSTM(H, H, LAYERS, backend="stand-in")
    plain_lstm = torch.nn.LSTM(H, H, LAYERS)
    fused_cells = [fusedrnn.LSTMCell(H, H, backend="stand-in") for _ in range(LAYERS)]
    plain_cells = [torch.nn.LSTMCell(H, H) for _ in range(LAYERS)]
    x = torch.randn(1, B, H)
    state = (torch.zeros(LAYERS, B, H), torch.zeros(LAYERS, B, H))
    cell_states = [(torch.zeros(B, H), torch.zeros(B, H)) for _ in range(LAYERS)]

    def cells(cs):
        def call():
            with torch.no_grad():
                inp = x[0]
                for c, s in zip(cs, cell_states):
                    inp = c(inp, s)[0]
        return call

    def module(m):
        def call():
            with torch.no_grad():
                m(x, state)
        return call

    def trained(m):
        def call():
            y, (h, c) = m(x, state)
            (y.sum() + h.sum() + c.sum()).backward()
        return call

    return {"cell x2": (cells(fused_cells), cells(plain_cells)),
            "lstm T=1": (module(fused_lstm), module(plain_lstm)),
            "lstm T=1 grad": (trained(fused_lstm), trained(plain_lstm))}


def _per_call_us(fn, calls: int) -> float:
    """CPU µs per call, on this thread's clock: the host cost itself, which time the process
    spent waiting for a core on a loaded machine would inflate."""
    t0 = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - t0) / calls * 1e6


def measure(calls: int = 1000, repeats: int = 9) -> dict:
    """{case: (fusedrnn µs, torch.nn µs, ratio)}: medians over `repeats`, the two timed in turns."""
    with stand_in_registered():
        pairs = _pairs()
        samples = {case: [] for case in pairs}
        for fused, plain in pairs.values():  # warm-up: first-call costs are not per-call costs
            for _ in range(calls // 10 + 1):
                fused(), plain()
        for _ in range(repeats):
            for case, (fused, plain) in pairs.items():
                samples[case].append((_per_call_us(fused, calls), _per_call_us(plain, calls)))
    out = {}
    for case, rows in samples.items():
        out[case] = (statistics.median(f for f, _ in rows), statistics.median(p for _, p in rows),
                     statistics.median(f / p for f, p in rows))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.host_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=1000, help="calls per timed block (default 1000)")
    p.add_argument("--repeats", type=int, default=9, help="repeats; medians are reported (default 9)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = measure(args.calls, args.repeats)
    print(f"{'case':<16}{'fusedrnn µs':>12}{'torch.nn µs':>13}")
    for case, (fused, plain, _) in results.items():
        print(f"{case:<16}{fused:12.1f}{plain:13.1f}")
    for case, (_, _, ratio) in results.items():
        print(f"ratio {case}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
