"""The CUDA kernels on the CPU through the emulated build (tools/cuda_emu): fixtures that load it
and set the launch knobs, and the accuracy rule its tests apply (tests/test_cuda_emulated.py)."""
import pytest
import torch

from fusedrnn.ops import cuda
from fusedrnn.ops.common import TORCH_CELLS

from support import contract

F32_FLOOR = 5e-5  # tests/gpu/test_cuda_gpu.py: FLOOR[torch.float32]


@pytest.fixture(scope="module")
def emu():
    from tools.cuda_emu import build as cuda_emu  # here, not at import: tests/conftest.py imports this module
    if cuda_emu.cuda_include() is None:
        pytest.skip("no CUDA headers (cuda_fp16.h) for the emulated build: install the CUDA toolkit or set CUDA_HOME")
    with cuda_emu.emulated() as mod:
        yield mod


@pytest.fixture
def knobs(monkeypatch):
    """Set fusedrnn.ops.cuda's launch knobs (FUSEDRNN_CUDA_*) for one test."""
    def set_(mode="auto", units=0, rows=0, passes=0):
        for name, value in ((cuda.MODE_ENV, mode), (cuda.UNITS_ENV, units), (cuda.ROWS_ENV, rows),
                            (cuda.PASSES_ENV, passes)):
            monkeypatch.setenv(name, str(value))
        monkeypatch.setenv(cuda.POISON_ENV, "1")  # outputs start NaN: an unwritten element fails
    return set_


def _rel(a, ref) -> float:
    return (a.double() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30) if ref.numel() else 0.0


def check(case, dtype):
    """AssertionError unless the cuda backend's outputs and gradients on `case` meet the rule above."""
    if dtype != torch.float32:
        contract.check_case(cuda, case, dtype)
        return
    args, lengths, cot = contract.make_args(case, dtype, "cpu")
    truth = contract._outputs_and_grads(contract._reference_layer, case, args, lengths, cot, torch.float64)
    ours = contract._backend_outputs_and_grads(cuda, case, args, lengths, cot)
    # the yardstick: torch.nn's own error, or for a cell torch.nn does not compute (the GRU with its
    # reset gate before the product) the reference's in this dtype, as the contract takes it
    yardstick = contract.torch_nn_layer if case.cell in TORCH_CELLS else contract._reference_layer
    torch_nn = contract._outputs_and_grads(yardstick, case, args, lengths, cot, dtype)
    for k, (a, t, r) in enumerate(zip(ours, torch_nn, truth, strict=True)):
        err, bound = _rel(a, r), max(2 * _rel(t, r), F32_FLOOR)
        assert err <= bound, f"{case}: output/gradient {k} {tuple(r.shape)}: relative error {err:.3g} > {bound:.3g}"


@pytest.fixture
def cuda_kernels(emu, monkeypatch):
    """The kernel backend name "triton" pointed at fusedrnn.ops.cuda (emulated) for one test,
    as tests/support/plain_kernels.py installs its module: the modules and fusedrnn.ops.recurrence
    then run the CUDA kernels on CPU tensors. Returns the backend name to use."""
    import torch._dynamo

    import fusedrnn
    monkeypatch.setitem(fusedrnn.backends.KERNEL_BACKENDS, "triton", cuda.__name__)
    monkeypatch.setattr(cuda, "availability", lambda device: None)  # CPU tensors are the emulator's device
    monkeypatch.setenv(cuda.POISON_ENV, "1")
    torch._dynamo.reset()  # compiled graphs bake the backend in
    return "triton"
