"""Issue 19 on a CUDA device, for every fused backend that can run here: strided and stride-0
arguments (in a subprocess, so an illegal address fails one test, not the session), padded
steps holding NaN/inf, and in-place ops on the outputs.

Skipped without CUDA.
"""
import os
import subprocess
import sys

import pytest
import torch

import fusedrnn
from fusedrnn import backends

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEV = torch.device("cuda")
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS)

from support import sequence_oracle as oracle  # noqa: E402  (tests/ on the path first)
from fusedrnn.ops import GATES  # noqa: E402


def runnable(backend):
    reason = backends.why_not(backend, DEV, "lstm", torch.float32, 8) if torch.cuda.is_available() else "no CUDA"
    if reason is not None:
        pytest.fail(f"backend {backend!r} cannot run on this GPU: {reason}")


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_strided_and_expanded_arguments(backend):
    runnable(backend)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, os.path.join(TESTS, "strided_args.py"), backend, "cuda"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "all layouts match" in proc.stdout


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_nonfinite_padded_gx_and_short_state_reach_nothing(backend, cell, reverse, value):
    runnable(backend)
    g = torch.Generator().manual_seed(0)
    T, B, H, G = 5, 3, 16, GATES[cell]
    lengths = torch.tensor([5, 2, 1])
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) * 0.5  # noqa: E731
    args = dict(gx=r(T, B, G * H), h0=r(B, H), c0=r(B, H) if cell == "lstm" else None, w_hh=r(G * H, H),
                b_hh=r(G * H))
    for b, L in enumerate(lengths.tolist()):
        args["gx"][L:, b] = value
    args["h0"][2, 0] = value  # the length-1 sequence's state
    want_out, want_grads = oracle.each_sequence_alone(cell, args, lengths, reverse)
    on_dev = {k: (v.to(DEV) if v is not None else None) for k, v in args.items()}
    got_out, got_grads = oracle.run_recurrence(cell, on_dev, lengths.to(DEV), reverse, backend, torch.float32)
    pairs = [(f"output {i}", a.cpu(), b) for i, (a, b) in enumerate(zip(got_out, want_out))]
    pairs += [(f"d{k}", got_grads[k].cpu(), want_grads[k]) for k in want_grads]
    oracle.assert_same_values(pairs, atol=1e-4)


@pytest.mark.parametrize("cls", [fusedrnn.LSTM, fusedrnn.GRU, fusedrnn.RNN], ids=["lstm", "gru", "rnn"])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_inplace_on_outputs(backend, cls):
    runnable(backend)
    torch.manual_seed(0)
    m = cls(8, 16, backend=backend, device=DEV)
    x = torch.randn(5, 3, 8, device=DEV, requires_grad=True)
    y, _ = m(x)
    y += 1.0  # torch.nn's cuDNN path refuses this; fusedrnn allows it on every backend
    y.square().sum().backward()
    assert torch.isfinite(m.weight_hh_l0.grad).all()
