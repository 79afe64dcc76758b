"""A non-finite value in a state goes where torch.nn sends it, in every dtype of the Triton
kernels (the interpreter here, tests/gpu on a device): the 16-bit kernels split the fp32
state into hi + lo halves, and an inf must stay inf * w = ±inf there, not inf - inf = NaN."""
import pytest
import torch

from support import backend_params
from support import contract

VALUES = [float("inf"), float("-inf"), float("nan")]


@pytest.mark.sampled
@backend_params.needs_triton
@pytest.mark.parametrize("value", VALUES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_nonfinite_state_reaches_what_torch_nn_reaches(cell, dtype, value):
    assert contract.nonfinite_mismatches("triton", cell, dtype, value) == []
