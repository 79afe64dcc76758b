"""backend="triton" through the modules and the backend plumbing: fusedrnn.LSTM against
torch.nn.LSTM, every output element written (NaN poisoning), the interface functions
(availability, unsupported, saved_shapes) and the launch choice in the interpreter."""
from __future__ import annotations

import pytest
import torch

import fusedrnn
from fusedrnn import ops
from fusedrnn.ops import triton as tri
from fusedrnn.ops.triton import config
from support.triton_recurrence import DEVICE, make_args
from support.triton_module import check_module

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def test_lstm_two_layer_bidirectional_packed_equals_torch():
    check_module("lstm", "unsorted", bidir=True)


@pytest.mark.parametrize("cell,packed,bidir", [("gru", "sorted", True), ("rnn_tanh", None, False),
                                               ("rnn_relu", "unsorted", True), ("lstm", None, False)])
def test_other_modules_equal_torch(cell, packed, bidir):
    check_module(cell, packed, bidir)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_element_written(monkeypatch, cell, dtype):
    """Outputs allocated NaN-filled: forward and backward must overwrite every element,
    including the zeros past each sequence's length (reverse, ragged lengths)."""
    monkeypatch.setenv("FUSEDRNN_CHECK", "1")  # NaN-filled outputs: an unwritten element fails
    (gx, h0, c0, w, b), lens = make_args(cell, 6, 5, 19, dtype, lengths=True, bias=True, seed=3)
    lens = lens.to(DEVICE, torch.int32)
    with torch.no_grad():
        y, hT, cT, saved = tri.forward(cell, gx, h0, c0, w, b, lens, True, True)
        outs = [y, hT] + ([cT] if cell == "lstm" else []) + list(saved)
        dy, dhT = torch.randn_like(y), torch.randn_like(hT)
        dcT = torch.randn_like(cT) if cell == "lstm" else None
        d_gx, d_gh, dh0, dc0 = tri.backward(cell, dy, dhT, dcT, gx, h0, c0, w, b, lens, True, y, saved)
        outs += [d_gx, d_gh, dh0] + ([dc0] if cell == "lstm" else [])
    for i, t in enumerate(outs):
        assert not t.isnan().any(), f"output {i} ({tuple(t.shape)}) has unwritten (NaN) elements"
    T = y.shape[0]
    past = torch.arange(T, device=DEVICE)[:, None] >= lens[None, :]
    assert (y[past] == 0).all() and (d_gx[past] == 0).all()
    assert d_gx.dtype == dtype and dh0.dtype == dtype


def test_poison_is_noticed(monkeypatch):
    """The poisoning check above can fail: an output the kernel never touches stays NaN."""
    monkeypatch.setenv("FUSEDRNN_CHECK", "1")  # NaN-filled outputs: an unwritten element fails
    assert tri.launch.new_out((2, 3), torch.float32, DEVICE).isnan().all()


@pytest.mark.parametrize("cell", CELLS)
def test_saved_shapes_match_forward(cell):
    (gx, h0, c0, w, b), _ = make_args(cell, 4, 3, 10, torch.bfloat16, lengths=False, bias=False)
    with torch.no_grad():
        *_, saved = tri.forward(cell, gx, h0, c0, w, b, None, False, True)
        *_, nosave = tri.forward(cell, gx, h0, c0, w, b, None, False, False)
    shapes = tri.saved_shapes(cell, gx, h0, c0, w, b, None, False, True)
    assert [(tuple(t.shape), t.dtype) for t in saved] == [(tuple(s), d) for s, d in shapes]
    assert nosave == () and tri.saved_shapes(cell, gx, h0, c0, w, b, None, False, False) == []


def test_unsupported_reasons():
    assert tri.unsupported("lstm", torch.float32, 64, 0) is None
    assert tri.unsupported("gru", torch.bfloat16, 4096, 0) is None  # large H falls back to streaming
    assert tri.unsupported("lstm", torch.float32, 64, 16) is None  # contract v2: the projection runs fused
    assert tri.unsupported("gru", torch.float16, 64, 0, directions=2) is None  # both directions in one launch
    assert "LSTM only" in tri.unsupported("gru", torch.float32, 64, 16)
    assert "directions" in tri.unsupported("lstm", torch.float32, 64, 0, directions=3)
    assert "float64" in tri.unsupported("rnn_tanh", torch.float64, 64, 0)


def test_explicit_request_raises():
    gx = torch.randn(3, 2, 4 * 5, dtype=torch.float64, device=DEVICE)
    h0 = torch.zeros(2, 5, dtype=torch.float64, device=DEVICE)
    w = torch.randn(20, 5, dtype=torch.float64, device=DEVICE)
    with pytest.raises(RuntimeError, match="float64"):
        ops.recurrence("lstm", gx, h0, h0, w, None, backend="triton")


def test_availability():
    assert tri.availability(DEVICE) is None
    assert "meta" in tri.availability(torch.device("meta"))
    if not torch.cuda.is_available():
        assert config.INTERPRET  # how these tests run without a GPU


@pytest.mark.parametrize("B,H", [(1, 8), (1024, 4096), (7, 768)])
def test_interpreter_never_selects_the_barrier(monkeypatch, B, H):
    """Programs of an interpreted launch run one after another: a barrier would deadlock."""
    monkeypatch.setattr(config, "INTERPRET", True)
    for cell in CELLS:
        for direction in ("fwd", "bwd"):
            launch = config.choose(cell, B, H, torch.float32, config.device_limits(DEVICE), direction)
            assert not launch.BARRIER and launch.layout in ("cta", "solo")
            assert launch.N_TILES * launch.BLOCK_N >= H and launch.grid[1] * launch.BLOCK_B >= B
