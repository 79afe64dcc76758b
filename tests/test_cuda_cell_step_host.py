"""The fused decode step of the cuda backend (`fusedrnn.ops.cuda.step`) on the host, no GPU:
the binding's checks of its sizes and pointers, the geometry its plan picks, and the
errors `step` raises for arguments of the wrong shape, dtype or device."""
import pytest
import torch

from fusedrnn.ops.cuda import CUDA_GATES as GATES  # the cells the CUDA kernels implement
from fusedrnn.ops import cuda as cuda_ops

from support.cuda_binding import no_device

C = pytest.importorskip("fusedrnn._C", reason="the CUDA extension is not built (no nvcc)")
F32, F16, BF16, I32 = 0, 1, 2, 3


def step_args(cell="lstm", dtype=F32, B=3, I=5, H=7):
    """Keyword arguments of _C.cell_step at fake, aligned addresses (c0, c only for lstm)."""
    lstm = cell == "lstm"
    return dict(cell=cell, dtype=dtype, B=B, I=I, H=H, x=0x1000, h0=0x2000, c0=0x3000 if lstm else 0,
                w_ih=0x4000, w_hh=0x5000, b_ih=0x6000, b_hh=0x7000, h=0x8000, c=0x9000 if lstm else 0, stream=0,
                device=0)


def _rejects(match, **changes):
    a = step_args(changes.pop("cell", "lstm"))
    a.update(changes)
    with pytest.raises(ValueError, match=match):
        C.cell_step(**a)


STEP_CELLS = [c for c in GATES if c != "gru_reset_before"]  # its step runs as the recurrence at T = 1


@no_device
@pytest.mark.parametrize("cell", STEP_CELLS)
def test_valid_step_gets_past_validation(cell):
    for dtype in (F32, F16, BF16):
        a = step_args(cell, dtype)
        with pytest.raises(RuntimeError, match="cannot use CUDA device 0"):
            C.cell_step(**a)
        a.update(b_ih=0, b_hh=0)  # biases are optional
        with pytest.raises(RuntimeError, match="cannot use CUDA device 0"):
            C.cell_step(**a)


def test_the_reset_before_gru_has_no_fused_step():
    _rejects("cell_step: gru_reset_before has no fused decode step", cell="gru_reset_before")


@pytest.mark.parametrize("key", ["x", "h0", "c0", "w_ih", "w_hh", "h", "c"])
def test_step_rejects_null_pointers(key):
    _rejects(f"cell_step: {key} is a null pointer", **{key: 0})


@pytest.mark.parametrize("key", ["x", "h0", "w_ih", "b_hh", "h"])
def test_step_rejects_negative_and_misaligned_pointers(key):
    _rejects(f"cell_step: {key} has a negative data_ptr", **{key: -16})
    _rejects(f"cell_step: {key} data_ptr is not aligned", **{key: 0x1002})
    _rejects(f"cell_step: {key} data_ptr is not aligned", dtype=BF16, **{key: 0x1001})


def test_step_rejects_bad_sizes_cells_and_dtypes():
    _rejects(r"B, I, H must be >= 1, got 0, 5, 7", B=0)
    _rejects(r"B, I, H must be >= 1", I=-1)
    _rejects(r"B, I, H must be >= 1", H=0)
    _rejects("G\\*H\\*H \\(W_hh elements\\) = .* exceeds the int32 range", H=30000)
    _rejects("G\\*H\\*I \\(W_ih elements\\) = .* exceeds the int32 range", I=1 << 20, H=1024)
    _rejects("B\\*I = .* exceeds the int32 range", B=1 << 20, I=1 << 12, H=4)
    _rejects("c0 must be 0 \\(absent\\) for cell gru", cell="gru", c0=0x3000)
    _rejects("c must be 0 \\(absent\\) for cell rnn_tanh", cell="rnn_tanh", c=0x9000)
    _rejects("unknown cell 'lstmx'", cell="lstmx")
    _rejects("dtype int32; the CUDA kernels take float32, float16 or bfloat16", dtype=I32)
    _rejects("unknown dtype code 9", dtype=9)
    _rejects("device index 64 out of range", device=64)


@pytest.mark.parametrize("cell", list(GATES))
def test_step_plan_covers_every_unit_and_row(cell):
    for B, I, H in ((1, 1024, 1024), (8, 512, 512), (3, 33, 37), (17, 7, 1), (1, 1, 5000)):
        for dtype in (torch.float32, torch.bfloat16):
            p = cuda_ops.step_plan_for(cell, dtype, B, I, H)
            UB, KW, NB = p["units_per_block"], p["warps_per_unit"], p["rows_per_block"]
            assert UB * KW == 8 and UB in (1, 2, 4, 8)  # eight warps per CTA
            assert NB == (1 if B == 1 else 8)
            assert (p["grid_x"] - 1) * UB < H <= p["grid_x"] * UB
            assert (p["grid_y"] - 1) * NB < B <= p["grid_y"] * NB
            G, e = GATES[cell], (4 if dtype == torch.float32 else 2)
            assert p["weight_mb"] == pytest.approx(G * H * (I + H) * e / 1e6)
            assert p["estimate_us"] > 0 and "weights read once" in p["reason"]



@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_step_on_cpu_tensors_raises():
    x, h0 = torch.zeros(1, 4), torch.zeros(1, 4)
    with pytest.raises(RuntimeError, match="fusedrnn cuda backend: no CUDA device"):
        cuda_ops.step("rnn_tanh", x, h0, None, torch.zeros(4, 4), torch.zeros(4, 4), None, None)
