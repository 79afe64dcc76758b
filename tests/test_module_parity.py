"""fusedrnn.LSTM/GRU/RNN(backend="reference") against torch.nn: outputs, h_n/c_n and
the gradients of the input, the given states and every parameter."""
import pytest
import torch

from support.parity import compare_to_torch, make_inputs, make_pair, make_state

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
# float64: both sides are exact up to rounding order. float32: fusedrnn may be at most
# twice as far from the float64 truth as torch.nn's own float32 run, plus 1 ulp of slack
# for the (rare) case where torch happens to be nearly exact.
F64_TOL = 1e-11


def check(ours, ref, inputs, hx, seed=0):
    err_ours, err_torch = compare_to_torch(ours, ref, inputs, hx, seed)
    dtype = next(ours.parameters()).dtype
    if dtype == torch.float64:
        assert err_ours < F64_TOL, err_ours
    else:
        assert err_ours <= 2 * err_torch + torch.finfo(dtype).eps, (err_ours, err_torch)


# (layers, bidirectional, batch_first, bias) combinations covering every value of each axis
LAYOUTS = [(1, False, False, True), (2, True, True, True), (3, False, True, False), (2, True, False, False)]


@pytest.mark.sampled
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers,bidir,batch_first,bias", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_padded(cell, layers, bidir, batch_first, bias, dtype):
    ours, ref = make_pair(cell, 5, 7, num_layers=layers, bidirectional=bidir,
                          batch_first=batch_first, bias=bias, dtype=dtype)
    x = make_inputs(5, 3, 6, dtype, batch_first=batch_first)
    check(ours, ref, x, make_state(cell, ours, 3, dtype))  # given states
    check(ours, ref, x, None)                               # default zero states


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("packed", ["sorted", "unsorted"])
@pytest.mark.parametrize("bidir", [False, True])
def test_packed(cell, packed, bidir):
    ours, ref = make_pair(cell, 4, 5, num_layers=2, bidirectional=bidir)
    x = make_inputs(4, 5, 7, torch.float64, packed=packed)
    check(ours, ref, x, make_state(cell, ours, 5, torch.float64))
    check(ours, ref, x, None)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_unbatched(cell, dtype):
    ours, ref = make_pair(cell, 3, 4, num_layers=2, bidirectional=True, dtype=dtype)
    x = make_inputs(3, None, 5, dtype, unbatched=True)
    check(ours, ref, x, make_state(cell, ours, None, dtype, unbatched=True))
    check(ours, ref, x, None)


@pytest.mark.parametrize("bidir", [False, True])
@pytest.mark.parametrize("packed", [None, "unsorted"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lstm_projection(bidir, packed, dtype):
    ours, ref = make_pair("lstm", 4, 6, num_layers=2, bidirectional=bidir, proj_size=3, dtype=dtype)
    x = make_inputs(4, 3, 5, dtype, packed=packed)
    check(ours, ref, x, make_state("lstm", ours, 3, dtype))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("packed", [None, "unsorted"])
def test_dropout_train_seeded(cell, packed):
    """Same seed, same dropout masks as torch.nn in training mode."""
    ours, ref = make_pair(cell, 4, 6, num_layers=3, bidirectional=True, dropout=0.4)
    ours.train(), ref.train()
    x = make_inputs(4, 3, 5, torch.float64, packed=packed)
    check(ours, ref, x, None, seed=7)


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_eval_is_identity(cell):
    ours, ref = make_pair(cell, 4, 6, num_layers=2, dropout=0.5)
    ours.eval(), ref.eval()
    check(ours, ref, make_inputs(4, 3, 5, torch.float64), None)


def test_dropout_train_actually_drops():
    """The seeded-parity test above would pass vacuously if dropout never ran."""
    ours, _ = make_pair("gru", 4, 6, num_layers=2, dropout=0.5)
    x = make_inputs(4, 3, 5, torch.float64)
    ours.train()
    torch.manual_seed(0)
    y_train = ours(x)[0]
    ours.eval()
    assert not torch.allclose(y_train, ours(x)[0])


def test_t1_odd_hidden_batch3():
    """Awkward sizes: one time step, odd H, batch 3."""
    for cell in CELLS:
        ours, ref = make_pair(cell, 1, 9, num_layers=2, bidirectional=True)
        check(ours, ref, make_inputs(1, 3, 1, torch.float64), make_state(cell, ours, 3, torch.float64))
