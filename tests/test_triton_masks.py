"""Every mask the Triton kernels hand to a load or store is boolean. Triton 3.9's CPU
interpreter rejects any other ("mask has unsupported dtype"); older ones accept an int32
mask, which a block mask `&`-ed with a runtime scalar condition became there (the
interpreter splats the scalar comparison as int32). Here the interpreter is made as strict
as 3.9's under whichever Triton is installed, so the pinned release catches a regression
too; scripts/triton_compat.sh runs the kernel tests under 3.9 itself."""
import numpy as np
import pytest
import torch

import fusedrnn
from support.triton_module import check_module
from support.triton_recurrence import DEVICE

interpreter = pytest.importorskip("triton.runtime.interpreter")
pytestmark = pytest.mark.skipif(DEVICE.type != "cpu", reason="checks the CPU interpreter's masks")


@pytest.fixture(autouse=True)
def strict_masks(monkeypatch):
    """Loads and stores raise on a non-boolean mask; -> the calls seen (so a test knows
    the check ran)."""
    seen = []
    builder = interpreter.InterpreterBuilder

    def strict(name, index):
        real = getattr(builder, name)

        def check(self, *args, **kw):
            mask = args[index].data
            seen.append(mask.dtype)
            if mask.dtype != np.bool_:
                raise TypeError(f"{name}: mask of dtype {mask.dtype}, not bool")
            return real(self, *args, **kw)
        monkeypatch.setattr(builder, name, check)

    strict("create_masked_load", 1)
    strict("create_masked_store", 2)
    return seen


@pytest.mark.parametrize("cell,packed,bidir", [("lstm", "unsorted", True), ("gru", None, False),
                                               ("rnn_relu", "sorted", True)])
def test_module_forward_and_backward_use_boolean_masks(cell, packed, bidir, strict_masks):
    check_module(cell, packed, bidir, layers=1)
    assert strict_masks


def test_projection_and_the_cell_step_use_boolean_masks(strict_masks):
    torch.manual_seed(0)
    m = fusedrnn.LSTM(4, 5, proj_size=3, bidirectional=True, backend="triton")
    x = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(4, 3, 4, requires_grad=True), [4, 2, 1])
    y, _ = m(x)
    y.data.sum().backward()
    with torch.no_grad():  # outside autograd a cell runs the fused step kernel
        fusedrnn.GRUCell(4, 5, backend="triton")(torch.randn(3, 4))
    assert strict_masks
