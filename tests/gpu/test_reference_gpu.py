"""reference_gpu.recurrence64 (one call of torch's RNN) equals the Python-loop float64
reference of fusedrnn.ops: values and the gradients of gx, h0, c0, w_hh, b_hh, with and
without lengths, in both directions, with and without bias. Runs on the CPU (ATen's loop)
everywhere and on the GPU (cuDNN in float64) where there is one."""
import pytest
import torch

from fusedrnn.ops import GATES, recurrence
from fusedrnn.ops.common import TORCH_CELLS
from reference_gpu import recurrence64

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _outs_and_grads(fn, cell, leaves, lengths, reverse, probes):
    leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in leaves.items()}
    outs = fn(cell, leaves["gx"], leaves["h0"], leaves["c0"], leaves["w"], leaves["b"], lengths, reverse)
    sum((o * p).sum() for o, p in zip(outs, probes)).backward()
    return list(outs) + [v.grad for v in leaves.values() if v is not None]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("cell", TORCH_CELLS)  # the loop below computes torch.nn's cells
def test_one_call_reference_equals_the_loop(cell, with_lengths, reverse, bias, device):
    T, B, H = 6, 4, 5
    G = GATES[cell]
    g = torch.Generator().manual_seed(7)
    f64 = dict(dtype=torch.float64)
    leaves = {"gx": torch.randn(T, B, G * H, generator=g, **f64), "h0": torch.randn(B, H, generator=g, **f64),
              "c0": torch.randn(B, H, generator=g, **f64) if cell == "lstm" else None,
              "w": torch.randn(G * H, H, generator=g, **f64) * 0.4,
              "b": torch.randn(G * H, generator=g, **f64) * 0.3 if bias else None}
    leaves = {k: (v.to(device) if v is not None else None) for k, v in leaves.items()}
    lengths = torch.tensor([T, 2, 5, 1]).to(device) if with_lengths else None
    probes = [torch.randn(T, B, H, generator=g, **f64).to(device)] + \
             [torch.randn(B, H, generator=g, **f64).to(device) for _ in range(2 if cell == "lstm" else 1)]
    loop = _outs_and_grads(lambda *a: recurrence(*a, backend="reference"), cell, leaves, lengths, reverse, probes)
    one = _outs_and_grads(recurrence64, cell, leaves, lengths, reverse, probes)
    assert len(one) == len(loop)
    for a, b in zip(one, loop):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    if with_lengths:   # past its end a sequence emits zeros
        assert one[0][2:, 1].abs().max().item() == 0.0
