"""The cells in real code: state_dict both ways, pickling, torch.load's defaults, TorchScript,
torch.compile and fusedrnn.convert (in place, shared modules, hooks, subclasses)."""
import copy
import io
import pickle
import warnings

import pytest
import torch
from torch import nn

import fusedrnn
from support import plain_kernels

PAIRS = [(fusedrnn.LSTMCell, nn.LSTMCell, {}), (fusedrnn.GRUCell, nn.GRUCell, {}),
         (fusedrnn.RNNCell, nn.RNNCell, {"nonlinearity": "relu"})]
IDS = ["lstm", "gru", "rnn_relu"]


def first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("ours_cls,torch_cls,kw", PAIRS, ids=IDS)
def test_same_constructor_parameters_init_state_dict_and_repr(ours_cls, torch_cls, kw):
    torch.manual_seed(3)
    t = torch_cls(3, 5, bias=False, **kw)
    torch.manual_seed(3)
    f = ours_cls(3, 5, bias=False, backend="reference", **kw)
    assert isinstance(f, torch_cls) and f.torch_class() is torch_cls
    assert [(n, p.shape) for n, p in t.named_parameters()] == [(n, p.shape) for n, p in f.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(t.parameters(), f.parameters()))  # torch's initialisation
    t2 = torch_cls(3, 5, bias=False, **kw)
    t2.load_state_dict(f.state_dict())
    f.load_state_dict(t.state_dict())
    assert repr(ours_cls(3, 5, **kw)) == repr(torch_cls(3, 5, **kw))
    assert repr(f) == repr(t)[:-1] + ", backend='reference')"
    with pytest.raises(ValueError, match="unknown backend 'bogus'"):
        ours_cls(3, 5, backend="bogus", **kw)


@pytest.mark.parametrize("ours_cls,torch_cls,kw", PAIRS, ids=IDS)
def test_pickle_deepcopy_to_and_torch_load_defaults(ours_cls, torch_cls, kw):
    f = ours_cls(3, 4, backend="reference", **kw)
    x = torch.randn(2, 3)
    for g in (copy.deepcopy(f), pickle.loads(pickle.dumps(f))):
        assert type(g) is ours_cls and g.backend == "reference" and g.weight_ih is not f.weight_ih
        torch.testing.assert_close(first(g(x)), first(f(x)))
    buf = io.BytesIO()
    torch.save(f, buf)
    buf.seek(0)
    loaded = torch.load(buf)  # weights_only=True: importing fusedrnn allowlists the cells
    assert type(loaded) is ours_cls and loaded.backend == "reference"
    d = f.to(torch.float64)
    assert first(d(x.double())).dtype == torch.float64


class Decoder(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell
        self.head = nn.Linear(cell.hidden_size, 2)

    def forward(self, x):
        out = self.cell(x)
        return self.head(out[0] if isinstance(out, tuple) else out)


@pytest.mark.parametrize("ours_cls,torch_cls,kw", PAIRS, ids=IDS)
def test_script_runs_the_torch_cell_and_convert_restores(ours_cls, torch_cls, kw):
    torch.manual_seed(0)
    model = Decoder(ours_cls(3, 4, backend="reference", **kw))
    fused = model.cell
    x = torch.randn(2, 3)
    eager = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        name = torch_cls.__name__
        with pytest.warns(UserWarning, match=rf"runs fusedrnn\.{name} as torch\.nn\.{name}"):
            scripted = torch.jit.script(model)
    assert type(model.cell) is torch_cls and model.cell.weight_hh is fused.weight_hh
    fusedrnn.convert(model)
    assert type(model.cell) is ours_cls and model.cell.backend == "reference"
    torch.testing.assert_close(scripted(x), eager)


def test_script_refuses_a_cell_subclass_with_its_own_forward():
    class Doubled(fusedrnn.GRUCell):
        def forward(self, x, hx=None):
            return super().forward(2 * x, hx)
    with pytest.raises(RuntimeError, match="Doubled overrides forward"):
        torch.jit.script(Doubled(3, 4))


def test_compile_fullgraph_with_a_kernel_backend(monkeypatch):
    """torch.compile(fullgraph=True) over a cell: the step is the recurrence's custom op."""
    import torch._dynamo  # noqa: PLC0415
    name = plain_kernels.install(monkeypatch)
    torch.manual_seed(0)
    model = Decoder(fusedrnn.LSTMCell(3, 4, backend=name)).double()
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    try:
        out = torch.compile(model, fullgraph=True, backend=record)(x)
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1
    assert any("fusedrnn.rnn_layer_forward" in str(n.target) for n in graphs[0].graph.nodes)
    torch.testing.assert_close(out, model(x))


class CaptionDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(3, 4)
        self.again = self.cell  # one cell under two names
        self.gru = nn.GRUCell(4, 4)
        self.rnn = nn.RNN(4, 4)


def test_convert_swaps_cells_in_place_and_keeps_sharing_and_hooks():
    torch.manual_seed(0)
    model = CaptionDecoder()
    cell = model.cell
    params = [id(p) for p in model.parameters()]
    calls = []
    handle = cell.register_forward_hook(lambda *a: calls.append("hook"))
    x = torch.randn(2, 3)
    before = cell(x)
    assert fusedrnn.convert(model, backend="reference") is model
    assert model.cell is model.again is cell and type(cell) is fusedrnn.LSTMCell and cell.backend == "reference"
    assert type(model.gru) is fusedrnn.GRUCell and type(model.rnn) is fusedrnn.RNN
    assert [id(p) for p in model.parameters()] == params
    torch.testing.assert_close(cell(x), before)
    assert calls == ["hook", "hook"]
    handle.remove()
    cell(x)
    assert calls == ["hook", "hook"]


class MyCell(nn.GRUCell):
    pass


class MyCellBase(nn.RNNCellBase):
    def __init__(self):
        super().__init__(3, 4, bias=True, num_chunks=1)


def test_convert_leaves_cell_subclasses_and_bare_bases_alone():
    model = nn.ModuleDict({"mine": MyCell(3, 4), "base": MyCellBase(), "plain": nn.RNNCell(3, 4)})
    with pytest.warns(fusedrnn.ConvertWarning) as caught:
        fusedrnn.convert(model)
    text = str(caught[0].message)
    assert "mine (MyCell): a subclass of torch.nn.GRUCell" in text and "derive it from fusedrnn.GRUCell" in text
    assert "base (MyCellBase): a bare torch.nn.RNNCellBase has no fusedrnn twin" in text
    assert type(model["mine"]) is MyCell and type(model["plain"]) is fusedrnn.RNNCell
