"""The custom ops' `kernels` argument is a string that a scripted or saved graph carries: the
ops must run only registered kernel backends, on every path, and never import the named
module otherwise (an import runs that module's code: "this" prints the Zen of Python)."""
import sys

import pytest
import torch

from support import plain_kernels
from fusedrnn.ops import library

PROBE = "fusedrnn_untrusted_probe"


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """An importable module that leaves a mark when imported; returns (name, mark path)."""
    mark = tmp_path / "imported"
    (tmp_path / f"{PROBE}.py").write_text(f"print('probe imported')\nopen({str(mark)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, PROBE, raising=False)
    monkeypatch.delitem(sys.modules, "this", raising=False)
    return mark


def _args(name, need_grad=False):
    g = torch.Generator().manual_seed(0)
    T, B, H = 2, 3, 4
    gx, h0, w = (torch.randn(*s, generator=g) for s in ((T, B, H), (B, H), (H, H)))
    return (name, "rnn_tanh", gx, h0, None, w, None, None, False, need_grad)


def _backward_args(name):
    _, cell, gx, h0, c0, w, b, L, rev, _ = _args(name)
    return (name, cell, torch.randn_like(gx), torch.randn_like(h0), None, gx, h0, c0, w, b, L, rev,
            torch.randn_like(gx), [])


def _refused(fn, name, capsys, mark=None):
    with pytest.raises(Exception) as e:
        fn()
    msg = str(e.value)
    assert f"kernel backend {name!r} is not registered" in msg and "'fusedrnn.ops.triton'" in msg, msg
    assert name not in sys.modules and capsys.readouterr().out == ""
    assert mark is None or not mark.exists()


class Scripted(torch.nn.Module):
    def forward(self, gx, h0, w):
        return torch.ops.fusedrnn.rnn_layer_forward("this", "rnn_tanh", gx, h0, None, w, None, None, False, False)


def test_a_saved_scripted_model_naming_a_module_does_not_import_it(probe, tmp_path, capsys):
    torch.jit.save(torch.jit.script(Scripted()), str(tmp_path / "model.pt"))
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    _, _, gx, h0, _, w, *_ = _args("this")
    _refused(lambda: loaded(gx, h0, w), "this", capsys)


@pytest.mark.parametrize("path", ["op", "op with autograd", "fake", "backward op", "eager shortcut"])
def test_every_path_refuses_an_unregistered_module(probe, capsys, path):
    calls = {
        "op": lambda: torch.ops.fusedrnn.rnn_layer_forward(*_args(PROBE)),
        "op with autograd": lambda: torch.ops.fusedrnn.rnn_layer_forward(
            *[a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in _args(PROBE, need_grad=True)]),
        "backward op": lambda: torch.ops.fusedrnn.rnn_layer_backward(*_backward_args(PROBE)),
        "eager shortcut": lambda: library.recurrence(PROBE, *_args(PROBE)[1:9]),
    }
    if path == "fake":
        def fake():
            with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
                torch.ops.fusedrnn.rnn_layer_forward(
                    *[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in _args(PROBE)])
        calls["fake"] = fake
    _refused(calls[path], PROBE, capsys, probe)


def test_a_registered_stand_in_runs_and_non_strings_are_refused():
    assert plain_kernels.__name__ in library.allowed_kernels()  # it registers itself on import
    y, hT = library.recurrence(*_args(plain_kernels.__name__)[:9])
    torch.testing.assert_close(hT, y[-1])
    with pytest.raises(TypeError, match="import name"):
        library.register_kernels(None)
    with pytest.raises(ValueError, match="not registered"):
        library.kernels_module(plain_kernels)
