"""convert(), state_dict both ways, deepcopy, pickling, .to(), repr."""
import copy
import io
import pickle
import warnings

import pytest
import torch
from torch import nn

import fusedrnn


class TwoLSTMsAndAGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True)
        self.inner = nn.Sequential(nn.Linear(12, 5), nn.Tanh())
        self.dec = nn.ModuleDict({"lstm": nn.LSTM(5, 3, proj_size=2), "gru": nn.GRU(2, 3)})

    def forward(self, x):
        y, _ = self.enc(x)
        y = self.inner(y).transpose(0, 1)
        y, _ = self.dec["lstm"](y)
        return self.dec["gru"](y)[0]


def test_convert_shares_parameters_and_matches():
    torch.manual_seed(0)
    model = TwoLSTMsAndAGRU()
    x = torch.randn(3, 7, 4)
    before = model(x)
    params_before = [id(p) for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters())
    out = fusedrnn.convert(model, backend="reference")
    assert out is model
    assert isinstance(model.enc, fusedrnn.LSTM) and isinstance(model.dec["gru"], fusedrnn.GRU)
    assert isinstance(model.dec["lstm"], fusedrnn.LSTM) and model.dec["lstm"].backend == "reference"
    assert [id(p) for p in model.parameters()] == params_before
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], model.parameters()))
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    # training through the converted model updates the very parameters the optimizer holds
    model(x).sum().backward()
    opt.step()
    assert not torch.allclose(model(x), before)


def test_convert_root_module_returns_replacement():
    m = nn.RNN(3, 4, nonlinearity="relu")
    new = fusedrnn.convert(m)
    assert isinstance(new, fusedrnn.RNN) and new.nonlinearity == "relu"
    assert new.weight_hh_l0 is m.weight_hh_l0


def test_state_dict_both_ways():
    t = nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    f = fusedrnn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, backend="reference")
    assert list(t.state_dict()) == list(f.state_dict())
    assert [v.shape for v in t.state_dict().values()] == [v.shape for v in f.state_dict().values()]
    f.load_state_dict(t.state_dict())
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(f(x)[0], t(x)[0], rtol=1e-5, atol=1e-6)
    t2 = nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    t2.load_state_dict(f.state_dict())
    torch.testing.assert_close(t2(x)[0], t(x)[0])
    buf = io.BytesIO()
    torch.save(f.state_dict(), buf)
    buf.seek(0)
    t2.load_state_dict(torch.load(buf))


def test_initialisation_is_torchs():
    torch.manual_seed(3)
    t = nn.GRU(3, 5, num_layers=2)
    torch.manual_seed(3)
    f = fusedrnn.GRU(3, 5, num_layers=2)
    for (n1, p1), (n2, p2) in zip(t.named_parameters(), f.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_deepcopy_pickle_to_repr():
    f = fusedrnn.GRU(3, 4, num_layers=2, backend="reference")
    g = copy.deepcopy(f)
    assert g.backend == "reference" and g.weight_ih_l0 is not f.weight_ih_l0
    h = pickle.loads(pickle.dumps(f))
    assert isinstance(h, fusedrnn.GRU) and h.backend == "reference"
    x = torch.randn(2, 1, 3)
    torch.testing.assert_close(h(x)[0], f(x)[0])
    d = f.to(torch.float64)
    assert d.weight_hh_l0.dtype == torch.float64
    assert d(x.double())[0].dtype == torch.float64
    assert repr(fusedrnn.LSTM(3, 4)) == repr(nn.LSTM(3, 4))
    assert "backend='reference'" in repr(f)


def test_subclass_of_torch():
    assert isinstance(fusedrnn.LSTM(2, 3), nn.LSTM)
    assert isinstance(fusedrnn.GRU(2, 3), nn.GRU)
    assert isinstance(fusedrnn.RNN(2, 3), nn.RNN)


# -- convert: object identity, sharing, hooks, subclasses, backends ----------------------

class SharedEncoderDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.LSTM(3, 4)
        self.dec = self.enc  # one module under two names
        self.blocks = nn.ModuleList([self.enc, nn.GRU(4, 4)])


def test_convert_keeps_shared_modules_shared():
    model = SharedEncoderDecoder()
    enc = model.enc
    fusedrnn.convert(model, backend="reference")
    assert model.enc is model.dec is model.blocks[0] is enc
    assert isinstance(enc, fusedrnn.LSTM) and isinstance(model.blocks[1], fusedrnn.GRU)
    model.dec.eval()
    assert not model.enc.training
    assert len(list(model.parameters())) == 8  # deduplicated as before


def test_convert_keeps_hooks_and_their_handles_working():
    m = nn.GRU(3, 4)
    calls = []
    handles = [m.register_forward_hook(lambda *a: calls.append("fwd")),
               m.register_forward_pre_hook(lambda *a: calls.append("pre")),
               m.register_full_backward_hook(lambda *a: calls.append("bwd"))]
    same = fusedrnn.convert(m, backend="reference")
    assert same is m and isinstance(m, fusedrnn.GRU)
    x = torch.randn(2, 1, 3, requires_grad=True)
    m(x)[0].sum().backward()
    assert sorted(calls) == ["bwd", "fwd", "pre"]
    for h in handles:
        h.remove()
    m(x)[0].sum().backward()
    assert len(calls) == 3  # removed through the handles taken before convert


def test_convert_sets_the_backend_of_fusedrnn_modules():
    model = nn.Sequential(fusedrnn.LSTM(3, 4, backend="reference"), nn.GRU(4, 4))
    fusedrnn.convert(model)
    assert model[0].backend == "reference" and model[1].backend == "auto"  # no backend: each keeps its own
    fusedrnn.convert(model, backend="torch")
    assert model[0].backend == model[1].backend == "torch"
    m = fusedrnn.RNN(3, 4)
    assert fusedrnn.convert(m, backend="reference") is m and m.backend == "reference"


class MyLSTM(nn.LSTM):
    def forward(self, x, hx=None):
        return super().forward(x * 2, hx)


class MyFusedGRU(fusedrnn.GRU):
    pass


def test_convert_leaves_torch_subclasses_alone_and_says_why():
    model = nn.ModuleDict({"mine": MyLSTM(3, 4), "plain": nn.LSTM(3, 4), "fused_sub": MyFusedGRU(3, 4)})
    with pytest.warns(fusedrnn.ConvertWarning, match=r"mine \(MyLSTM\): a subclass of torch.nn.LSTM.*"
                                                     r"derive it from fusedrnn.LSTM"):
        fusedrnn.convert(model, backend="reference")
    assert type(model["mine"]) is MyLSTM
    assert isinstance(model["plain"], fusedrnn.LSTM) and model["fused_sub"].backend == "reference"
    x = torch.randn(2, 1, 3)
    torch.testing.assert_close(model["mine"](x)[0], nn.LSTM.forward(model["mine"], 2 * x)[0])


def test_convert_warns_nothing_for_an_ordinary_model():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fusedrnn.convert(TwoLSTMsAndAGRU())
