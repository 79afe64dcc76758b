"""Whole-model torch.save / torch.load with torch's defaults, torch.jit.script and torch.jit.trace."""
import io
import warnings

import pytest
import torch
from torch import nn

from support import backend_params
import fusedrnn

MODULES = [lambda: fusedrnn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, backend="reference"),
           lambda: fusedrnn.GRU(3, 4, batch_first=True), lambda: fusedrnn.RNN(3, 4, nonlinearity="relu")]


@pytest.mark.parametrize("make", MODULES, ids=["lstm", "gru", "rnn"])
def test_whole_module_loads_with_torch_load_defaults(make):
    """torch.load defaults to weights_only=True, which unpickles only allowlisted classes;
    importing fusedrnn allowlists its modules."""
    m = make()
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    loaded = torch.load(buf)  # no weights_only=False, no safe_globals
    assert type(loaded) is type(m) and loaded.backend == m.backend
    x = torch.randn(2, 3, 3)
    torch.testing.assert_close(loaded(x)[0], m(x)[0])


def test_model_with_torch_containers_needs_only_torchs_own_classes_allowlisted():
    """torch allowlists no torch.nn module class itself: a container of torch.nn and fusedrnn
    modules needs the torch.nn classes allowlisted, exactly as it would without fusedrnn."""
    model = nn.Sequential(nn.Linear(3, 3), fusedrnn.LSTM(3, 4, backend="reference"))
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    with torch.serialization.safe_globals([nn.Sequential, nn.Linear]):
        loaded = torch.load(buf)
    assert isinstance(loaded[1], fusedrnn.LSTM) and loaded[1].backend == "reference"


class Tagger(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        size = getattr(rnn, "proj_size", 0) or rnn.hidden_size
        self.head = nn.Linear(size * (2 if rnn.bidirectional else 1), 2)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y)


def outputs_and_grads(model, x):
    x = x.detach().requires_grad_()
    out = model(x)
    params = [p for p in model.parameters()]
    return [out] + list(torch.autograd.grad(out.square().sum(), [x] + params))


@pytest.mark.parametrize("make", MODULES, ids=["lstm", "gru", "rnn"])
def test_script_runs_torch_nn_with_the_same_parameters(make):
    torch.manual_seed(0)
    model = Tagger(make())
    fused, backend = model.rnn, model.rnn.backend
    x = torch.randn(2, 5, 3)
    eager = outputs_and_grads(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        with pytest.warns(UserWarning, match=r"runs fusedrnn\.\w+ as torch\.nn\.\w+ .* fusedrnn.convert\(model\) "
                                             r"puts the fusedrnn module back"):
            scripted = torch.jit.script(model)
        alone = torch.jit.script(make())  # the module itself, as torch.jit.script(nn.LSTM) gives
    assert scripted.rnn.original_name == type(fused).__name__
    assert type(alone) is torch.jit.RecursiveScriptModule
    # TorchScript put the torch.nn twin (same parameters) in the model; convert puts fusedrnn back
    assert type(model.rnn) is getattr(nn, type(fused).__name__) and model.rnn.weight_hh_l0 is fused.weight_hh_l0
    fusedrnn.convert(model)
    assert type(model.rnn) is type(fused) and model.rnn.backend == backend
    for a, b in zip(outputs_and_grads(scripted, x), eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the scripted module holds the very same parameters
        model.rnn.weight_hh_l0.mul_(0.5)
    torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-6)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.jit.load(buf)(x), model(x), rtol=1e-5, atol=1e-6)


def test_script_refuses_a_subclass_with_its_own_forward():
    class Doubled(fusedrnn.GRU):
        def forward(self, x, hx=None):
            return super().forward(2 * x, hx)

    with pytest.raises(RuntimeError, match="Doubled overrides forward"):
        torch.jit.script(Doubled(3, 4))


@backend_params.needs_triton
@pytest.mark.parametrize("cls", [fusedrnn.LSTM, fusedrnn.GRU], ids=["lstm", "gru"])
def test_trace_with_triton_passes_its_check_and_generalises(cls):
    """The traced graph holds the fused custom op; torch.jit.trace's sanity check re-traces
    under no_grad, which must record the same graph."""
    torch.manual_seed(0)
    model = Tagger(cls(3, 8, backend="triton"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (torch.randn(4, 2, 3),))  # check_trace=True is the default
    assert "fusedrnn::rnn_layer_forward" in str(traced.inlined_graph)
    x = torch.randn(5, 3, 3)  # other T and B than traced with
    for a, b in zip(outputs_and_grads(traced, x), outputs_and_grads(model, x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_trace_bidirectional_projection_on_the_kernel_path(monkeypatch):
    """Contract v2 through torch.jit.trace (stand-in kernels): one custom op per layer holding both
    directions and the projection, passing the trace check and generalising to other sizes."""
    from support import plain_kernels
    name = plain_kernels.install(monkeypatch)
    torch.manual_seed(0)
    model = Tagger(fusedrnn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, backend=name)).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (torch.randn(4, 2, 3, dtype=torch.float64),))
    assert str(traced.inlined_graph).count("fusedrnn::rnn_layer_forward") == 2
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    for a, b in zip(outputs_and_grads(traced, x), outputs_and_grads(model, x)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
