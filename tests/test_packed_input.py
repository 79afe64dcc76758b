"""Malformed PackedSequences and packed-batch states: refused as torch.nn refuses them, with
its exception type and (where torch checks deliberately) its message; accepted where torch
accepts them, with torch's results."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fusedrnn
from support import plain_kernels

TWINS = {"lstm": (fusedrnn.LSTM, nn.LSTM), "gru": (fusedrnn.GRU, nn.GRU), "rnn": (fusedrnn.RNN, nn.RNN)}
BATCH_SIZES = {
    "increasing": torch.tensor([1, 2]),
    "int32": torch.tensor([2, 1], dtype=torch.int32),
    "int16": torch.tensor([2, 1], dtype=torch.int16),
    "float": torch.tensor([2.0, 1.0]),
    "2-D": torch.tensor([[2, 1]]),
    "negative": torch.tensor([2, -1]),
    "empty": torch.tensor([], dtype=torch.long),
    "0-d": torch.tensor(3),
    "sum past data": torch.tensor([2, 2]),
    "increasing past data": torch.tensor([1, 1, 2]),
    "sum short of data": torch.tensor([2, 0]),
    "sum short, equal sizes": torch.tensor([1, 1]),
    "trailing zero": torch.tensor([2, 1, 0]),
}
#: (cell, case, dtype) where torch's message is an accident of its kernel (a broadcast or a
#: view failing): fusedrnn gives the same exception type with a message saying what is wrong
OWN_MESSAGE = {(cell, "increasing", dt) for cell in ("lstm", "gru", "rnn") for dt in (torch.float32, torch.float64)} \
    | {("lstm", "sum past data", torch.float32)}


#: torch.nn.LSTM's float32 CPU kernel (oneDNN) views a batch whose sizes are all equal as a
#: padded (T, B, F) tensor, so there (only) it refuses data rows past the sum; in float64,
#: and for GRU and RNN, torch ignores them, and so does fusedrnn
TORCH_ACCIDENT = {("lstm", "sum short, equal sizes", torch.float32)}


@pytest.fixture(params=["reference", "kernels"])
def backend(request, monkeypatch):
    return plain_kernels.install(monkeypatch) if request.param == "kernels" else request.param


def outcome(module, *args):
    try:
        y, h = module(*args)
    except Exception as e:  # noqa: BLE001  (whatever torch raises is what we compare)
        return type(e), str(e), None
    return None, None, [y.data] + (list(h) if isinstance(h, tuple) else [h])


def pair(cell, backend, dtype=torch.float32):
    ours_cls, torch_cls = TWINS[cell]
    ours = ours_cls(3, 4, backend=backend, dtype=dtype)
    ref = torch_cls(3, 4, dtype=dtype)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.sampled
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("case", list(BATCH_SIZES))
@pytest.mark.parametrize("cell", list(TWINS))
def test_malformed_batch_sizes_like_torch(cell, case, with_hx, dtype, backend):
    if (cell, case, dtype) in TORCH_ACCIDENT:
        pytest.skip("torch refuses this by accident only; see TORCH_ACCIDENT")
    if cell == "lstm" and with_hx and case in ("increasing", "2-D", "sum short, equal sizes"):
        pytest.skip("torch.nn.LSTM runs these unchecked (returning rows it never computed, failing in a view, "
                    "or taking a state of 2 sequences for a batch of 1): fusedrnn applies torch's state checks; "
                    "see test_increasing_batch_sizes_are_refused")
    ours, ref = pair(cell, backend, dtype)
    data = torch.randn(3, 3, dtype=dtype)
    h = torch.zeros(1, 2, 4, dtype=dtype)
    hx = ((h, h.clone()) if cell == "lstm" else h) if with_hx else None
    x = PackedSequence(data, BATCH_SIZES[case])
    want_type, want_msg, want = outcome(ref, x, hx)
    got_type, got_msg, got = outcome(ours, x, hx)
    assert got_type is want_type, (got_msg, want_msg)
    if want_type is None:
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    elif (cell, case, dtype) not in OWN_MESSAGE:
        assert got_msg == want_msg


@pytest.mark.parametrize("cell", list(TWINS))
def test_increasing_batch_sizes_are_refused(cell, backend):
    """The issue's case: 3 rows and batch sizes [1, 2]; torch.nn raises a RuntimeError (for GRU and
    RNN given hx, its hidden-size check) or, for an LSTM given hx, returns 4 rows from 3:
    fusedrnn always refuses."""
    ours, _ = pair(cell, backend)
    x = PackedSequence(torch.randn(3, 3), torch.tensor([1, 2]))
    with pytest.raises(RuntimeError, match=r"batch_sizes must be non-increasing .* got \[1, 2\]"):
        ours(x)
    hx = (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)) if cell == "lstm" else torch.zeros(1, 2, 4)
    with pytest.raises(RuntimeError, match="non-increasing" if cell == "lstm" else r"Expected hidden size \(1, 1, 4\)"):
        ours(x, hx)


@pytest.mark.parametrize("sorted_", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("ranks", [(2, 2), (1, 3), (3, 1), (2, 3), (0, 3)], ids=str)
def test_packed_lstm_with_low_rank_state_raises_torchs_index_error(ranks, sorted_, backend):
    ours, ref = pair("lstm", backend)
    x = pack_padded_sequence(torch.randn(3, 2, 3), torch.tensor([3, 2] if sorted_ else [2, 3]),
                             enforce_sorted=sorted_)
    shape = {0: (), 1: (4,), 2: (2, 4), 3: (1, 2, 4)}
    hx = tuple(torch.zeros(shape[r]) for r in ranks)
    want = outcome(ref, x, hx)
    assert want[0] is IndexError
    assert outcome(ours, x, hx)[:2] == want[:2]


def test_packed_lstm_with_a_tensor_state_is_a_type_error(backend):
    ours, ref = pair("lstm", backend)
    x = pack_padded_sequence(torch.randn(3, 2, 3), torch.tensor([3, 2]))
    assert outcome(ref, x, torch.zeros(1, 2, 4))[0] is TypeError
    assert outcome(ours, x, torch.zeros(1, 2, 4))[0] is TypeError


@pytest.mark.parametrize("cell", list(TWINS))
def test_strided_batch_sizes_read_by_value(cell, backend):
    """torch.nn reads a non-contiguous batch_sizes as raw memory ([2, 9] for the values [2, 1]
    below) and fails; fusedrnn reads its values, as if it were contiguous."""
    ours, ref = pair(cell, backend)
    data = torch.randn(3, 3)
    strided = torch.tensor([2, 9, 1])[::2]
    got = outcome(ours, PackedSequence(data, strided))[2]
    want = outcome(ref, PackedSequence(data, strided.contiguous()))[2]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
