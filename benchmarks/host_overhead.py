"""`python -m benchmarks.host_overhead`: what each layer of fusedrnn's Python costs per call of
a decode step, measured on the host (any machine, no GPU needed).

A decode step is mostly host time (docs/anchors.md: cuDNN 155 µs per 2-layer step, nearly all
overhead), so the layers between `module(x, state)` and a kernel launch are timed here on
their own: a stand-in kernel backend whose forward only allocates its outputs (as a real
launcher does) takes the kernels' place, the sizes are tiny (B=1, H=8) so arithmetic is
negligible, and each row is the best over repeats of the mean µs per call. Host timer,
one thread; CPU numbers — a GPU host runs the same Python, typically faster.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time

import torch
import torch.nn.functional as F

import fusedrnn
from fusedrnn import backends
from fusedrnn.ops import common, library

H, B, LAYERS = 8, 1, 2
STAND_IN = __name__


# -- the stand-in kernel backend: the contract's interface, outputs allocated, nothing computed --

def availability(device):
    return None


def unsupported(cell, dtype, hidden_size, proj_size):
    return None


def saved_shapes(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
    return []


def forward(cell, gx, h0, c0, w_hh, b_hh, lengths, reverse, need_grad):
    T, Bx, GH = gx.shape
    Hx = GH // common.GATES[cell]
    y = gx.new_empty(T, Bx, Hx)
    return y, gx.new_empty(Bx, Hx), (gx.new_empty(Bx, Hx) if c0 is not None else None), ()


def _time(fn, calls: int, repeats: int) -> float:
    for _ in range(calls // 10 + 1):
        fn()
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - t0) / calls * 1e6)
    return min(per_call)  # the least disturbed repeat: other processes only ever add time


@contextlib.contextmanager
def _stand_in_registered():
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


def rows(calls: int = 2000, repeats: int = 7) -> list[tuple[str, float]]:
    """(what, µs per call) from the outermost layer to the kernel launch."""
    with _stand_in_registered():
        return _rows(calls, repeats)


def _rows(calls: int, repeats: int) -> list[tuple[str, float]]:
    torch.manual_seed(0)
    lstm = fusedrnn.LSTM(H, H, LAYERS, batch_first=True, backend="stand-in")
    cells = [fusedrnn.LSTMCell(H, H, backend="stand-in") for _ in range(LAYERS)]
    plain, plain_cells = torch.nn.LSTM(H, H, LAYERS, batch_first=True), [torch.nn.LSTMCell(H, H) for _ in range(LAYERS)]
    x = torch.randn(B, 1, H)
    state = (torch.zeros(LAYERS, B, H), torch.zeros(LAYERS, B, H))
    cell_states = [(torch.zeros(B, H), torch.zeros(B, H)) for _ in range(LAYERS)]
    gx = torch.randn(1, B, 4 * H)
    w = lstm.weight_hh_l0

    def cell_loop(cs):
        inp = x[:, 0]
        for c, s in zip(cs, cell_states):
            inp = c(inp, s)[0]

    def custom_op():
        library.recurrence_forward(STAND_IN, "lstm", gx, state[0][0], state[1][0], w, None, None, False, False)

    def t(fn):
        return _time(fn, calls, repeats)
    with torch.no_grad():
        out = [
            ("torch.nn.LSTM, 2 layers, T=1 (CPU kernels included)", t(lambda: plain(x, state))),
            ("torch.nn.LSTMCell x2 (CPU kernels included)", t(lambda: cell_loop(plain_cells))),
            ("fusedrnn.LSTM, 2 layers, T=1, stand-in kernels", t(lambda: lstm(x, state))),
            ("fusedrnn.LSTMCell x2, stand-in kernels", t(lambda: cell_loop(cells))),
            ("  one layer: F.linear (input projection)", t(lambda: F.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0))),
            ("  one layer: fusedrnn.ops.run (no checks)",
             t(lambda: fusedrnn.ops.run("stand-in", "lstm", gx, state[0][0], state[1][0], w, None))),
            ("  one layer: fusedrnn.ops.recurrence (checks, backend choice)",
             t(lambda: fusedrnn.ops.recurrence("lstm", gx, state[0][0], state[1][0], w, None, backend="stand-in"))),
            ("  one layer: the custom op, called without autograd (what the no-grad path skips)", t(custom_op)),
            ("  one layer: the stand-in forward itself (3 allocations)",
             t(lambda: forward("lstm", gx, state[0][0], state[1][0], w, None, None, False, False))),
            ("  backend choice (backends.choose_name)",
             t(lambda: backends.choose_name("stand-in", x.device, "lstm", x.dtype, H, 0, B, 1, False))),
            ("  torch.nn's own checks (check_forward_args)", t(lambda: lstm.check_forward_args(x, state, None))),
        ]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.host_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=2000, help="calls per repeat (default 2000)")
    p.add_argument("--repeats", type=int, default=7, help="repeats; the best is reported (default 7)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for what, us in rows(args.calls, args.repeats):
        print(f"{us:8.1f} µs  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
