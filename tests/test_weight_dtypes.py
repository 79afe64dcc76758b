"""A weight or bias whose dtype differs from the input's: fusedrnn's modules and cells do what
torch.nn does — its RuntimeError, with its message (probed here at run time, since it depends on
which weight and on torch's kernel), or, where torch.nn computes anyway (its CPU LSTM casts a
float16 bias_hh), its result — on every backend that runs on the CPU, never a silent cast."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from support import backend_params
from support.parity import make_pair

#: (parameter name, dtype it is given) in a float32 module or cell
ODD_MODULE_PARAMS = [("weight_hh_l0", torch.float64), ("bias_hh_l0", torch.float16), ("bias_ih_l0", torch.float64),
                     ("weight_hh_l1", torch.float64)]
ODD_CELL_PARAMS = [("weight_hh", torch.float64), ("bias_hh", torch.float16), ("bias_ih", torch.float64)]


@pytest.fixture(params=backend_params.ALL)
def backend(request, monkeypatch):
    return backend_params.resolve(request.param, monkeypatch)


def with_param_dtype(module, name, dtype):
    setattr(module, name, nn.Parameter(getattr(module, name).detach().to(dtype)))
    return module


def outcome(fn):
    """("raised", type, message) or ("ran", outputs)."""
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001  (whatever torch.nn raises, ours must raise)
        return "raised", type(e), str(e)
    outs = out if isinstance(out, tuple) else (out,)
    flat = [t for o in outs for t in (o if isinstance(o, tuple) else (o,))]
    return "ran", [getattr(t, "data", t) for t in flat]


def assert_same_outcome(ours, ref):
    assert ours[0] == ref[0], (ours, ref)
    if ref[0] == "raised":
        assert ours[1:] == ref[1:]
    else:
        for a, b in zip(ours[1], ref[1]):
            assert a.dtype == b.dtype
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.sampled
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("name,dtype", ODD_MODULE_PARAMS)
@pytest.mark.parametrize("packed", [False, True])
def test_module_weight_of_another_dtype_is_torchs(cell, name, dtype, packed, backend):
    ours, ref = make_pair(cell, 3, 5, backend=backend, dtype=torch.float32, num_layers=2)
    with_param_dtype(ours, name, dtype)
    with_param_dtype(ref, name, dtype)
    x = torch.randn(4, 3, 3)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([4, 2, 1]))
    ref_outcome = outcome(lambda: ref(x))
    assert ref_outcome[0] == "raised" or (cell, name, packed) == ("lstm", "bias_hh_l0", False), ref_outcome
    assert_same_outcome(outcome(lambda: ours(x)), ref_outcome)


@pytest.mark.sampled
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("name,dtype", ODD_CELL_PARAMS)
def test_cell_weight_of_another_dtype_is_torchs(cell, name, dtype, backend):
    ours, ref = make_pair(cell, 3, 5, backend=backend, dtype=torch.float32, cells=True)
    with_param_dtype(ours, name, dtype)
    with_param_dtype(ref, name, dtype)
    x = torch.randn(2, 3)
    ref_outcome = outcome(lambda: ref(x))
    assert ref_outcome[0] == "raised", ref_outcome
    assert_same_outcome(outcome(lambda: ours(x)), ref_outcome)
