"""Bad input gives torch.nn's own exception type and message on the fused path."""
import pytest
import torch

import fusedrnn
from support.parity import make_pair


def raised(fn):
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


def same_error(ours, ref, *args):
    assert raised(lambda: ours(*args)) == raised(lambda: ref(*args))


CELLS = ["lstm", "gru", "rnn_tanh"]


@pytest.mark.parametrize("cell", CELLS)
def test_wrong_ndim(cell):
    ours, ref = make_pair(cell, 4, 5)
    same_error(ours, ref, torch.randn(2, 3, 4, 1, dtype=torch.float64))
    same_error(ours, ref, torch.randn(4, dtype=torch.float64))


@pytest.mark.parametrize("cell", CELLS)
def test_wrong_feature_size(cell):
    ours, ref = make_pair(cell, 4, 5)
    same_error(ours, ref, torch.randn(2, 3, 6, dtype=torch.float64))


@pytest.mark.parametrize("cell", CELLS)
def test_wrong_state_shape(cell):
    ours, ref = make_pair(cell, 4, 5, num_layers=2)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    h = torch.zeros(1, 3, 5, dtype=torch.float64)  # one layer short
    hx = (h, torch.zeros(2, 3, 5, dtype=torch.float64)) if cell == "lstm" else h
    same_error(ours, ref, x, hx)
    if cell == "lstm":
        hx = (torch.zeros(2, 3, 5, dtype=torch.float64), torch.zeros(2, 4, 5, dtype=torch.float64))
        same_error(ours, ref, x, hx)


@pytest.mark.parametrize("cell", CELLS)
def test_state_rank_mismatch(cell):
    ours, ref = make_pair(cell, 4, 5)
    h2 = torch.zeros(3, 5, dtype=torch.float64)
    same_error(ours, ref, torch.randn(2, 3, 4, dtype=torch.float64), (h2, h2) if cell == "lstm" else h2)
    h3 = torch.zeros(1, 1, 5, dtype=torch.float64)
    same_error(ours, ref, torch.randn(2, 4, dtype=torch.float64), (h3, h3) if cell == "lstm" else h3)


@pytest.mark.parametrize("cell", CELLS)
def test_input_dtype_mismatch(cell):
    ours, ref = make_pair(cell, 4, 5)
    same_error(ours, ref, torch.randn(2, 3, 4, dtype=torch.float32))


def test_hidden_dtype_mismatch_is_runtime_error():
    ours, ref = make_pair("gru", 4, 5)
    x, h = torch.randn(2, 3, 4, dtype=torch.float64), torch.zeros(1, 3, 5, dtype=torch.float32)
    t_ours, msg = raised(lambda: ours(x, h))
    assert t_ours is raised(lambda: ref(x, h))[0] is RuntimeError
    assert "dtype" in msg


@pytest.mark.parametrize("kwargs", [dict(dropout=1.5), dict(num_layers=0), dict(hidden_size=0),
                                    dict(proj_size=9), dict(bias="yes"), dict(proj_size=-1)])
def test_constructor_errors_are_torchs(kwargs):
    base = dict(input_size=4, hidden_size=5)
    base.update(kwargs)
    assert raised(lambda: fusedrnn.LSTM(**base)) == raised(lambda: torch.nn.LSTM(**base))


def test_rnn_bad_nonlinearity_is_torchs():
    assert raised(lambda: fusedrnn.RNN(3, 4, nonlinearity="gelu")) == \
        raised(lambda: torch.nn.RNN(3, 4, nonlinearity="gelu"))


def test_unknown_backend():
    with pytest.raises(ValueError, match="valid backends are 'auto', 'cuda', 'triton', 'reference', 'torch'"):
        fusedrnn.LSTM(3, 4, backend="cudnn")
    m = fusedrnn.GRU(3, 4)
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        m.backend = "fast"
    with pytest.raises(ValueError, match="unknown backend"):
        fusedrnn.convert(torch.nn.LSTM(3, 4), backend="nope")


def test_backend_is_keyword_only():
    with pytest.raises(TypeError):
        fusedrnn.LSTM(3, 4, 1, True, False, 0.0, False, 0, None, None, "reference")


@pytest.mark.parametrize("backend", ["triton", "cuda", "reference"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.int64, torch.float16])
@pytest.mark.parametrize("cls", [fusedrnn.LSTM, fusedrnn.GRU, fusedrnn.RNN])
def test_input_dtype_unlike_the_weights_is_torchs_value_error_on_every_backend(cls, dtype, backend):
    """Before a backend is chosen: an explicit backend that cannot run the input's dtype (or
    this device) must not answer first with its own RuntimeError."""
    ours = cls(3, 4, backend=backend)
    ref = getattr(torch.nn, cls.__name__)(3, 4)
    x = torch.ones(2, 1, 3, dtype=dtype)
    kind, msg = raised(lambda: ours(x))
    assert (kind, msg) == raised(lambda: ref(x))
    assert kind is ValueError and f"RNN input dtype ({dtype}) does not match weight dtype" in msg
