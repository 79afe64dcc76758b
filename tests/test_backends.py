"""Backend names, the environment override, available_backends() and explain()."""
import warnings

import pytest
import torch

import fusedrnn
from fusedrnn import backends


def test_available_backends_lists_every_name_with_a_reason():
    av = fusedrnn.available_backends()
    assert list(av) == list(fusedrnn.BACKENDS)
    for name, (ok, reason) in av.items():
        assert isinstance(ok, bool) and isinstance(reason, str) and reason
    assert av["reference"][0] and av["torch"][0]
    if not torch.cuda.is_available():
        assert not av["cuda"][0]


def test_auto_on_cpu_runs_torch(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    m = fusedrnn.LSTM(3, 4)
    x = torch.randn(2, 1, 3)
    assert "'torch'" in fusedrnn.explain(m, x)
    assert "cpu" in fusedrnn.explain(m, x)
    called = []
    monkeypatch.setattr(fusedrnn.nn.LSTM, "_fused_forward", lambda *a: called.append(a))
    m(x)
    assert not called  # went through torch.nn.LSTM.forward


def test_env_overrides_auto(monkeypatch):
    m = fusedrnn.GRU(3, 4)
    monkeypatch.setenv(backends.ENV_VAR, "reference")
    assert "'reference'" in fusedrnn.explain(m, torch.randn(2, 1, 3))
    assert "FUSEDRNN_BACKEND" in fusedrnn.explain(m, torch.randn(2, 1, 3))
    m.backend = "torch"  # an explicit choice is not overridden
    assert "'torch'" in fusedrnn.explain(m, torch.randn(2, 1, 3))
    monkeypatch.setenv(backends.ENV_VAR, "bogus")
    m.backend = "auto"
    with pytest.raises(ValueError, match="FUSEDRNN_BACKEND='bogus'"):
        m(torch.randn(2, 1, 3))


def test_explicit_backend_that_cannot_run_raises_with_reason():
    m = fusedrnn.LSTM(3, 4, backend="cuda")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="fusedrnn backend 'cuda' cannot run this call"):
        m(torch.randn(2, 1, 3))


def test_auto_fallback_on_cuda_warns_once(monkeypatch):
    """'auto' on a CUDA tensor with no fused backend usable warns once and picks torch."""
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    monkeypatch.setattr(backends, "why_not", lambda name, *a, **k: None if name == "torch" else f"{name} is broken")
    monkeypatch.setattr(backends, "_warned", set())
    dev = torch.device("cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c1 = backends.choose("auto", dev, "lstm", torch.float16, 64)
        c2 = backends.choose("auto", dev, "lstm", torch.float16, 64)
    assert c1.name == c2.name == "torch"
    assert "cuda: cuda is broken" in c1.reason and "triton: triton is broken" in c1.reason
    assert len([w for w in caught if "fell back" in str(w.message)]) == 1


def test_auto_prefers_cuda_then_triton(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    dev = torch.device("cuda")
    monkeypatch.setattr(backends, "why_not", lambda name, *a, **k: None)
    assert backends.choose("auto", dev, "gru", torch.float32, 8).name == "cuda"
    monkeypatch.setattr(backends, "why_not", lambda name, *a, **k: "no" if name == "cuda" else None)
    assert backends.choose("auto", dev, "gru", torch.float32, 8).name == "triton"


def test_explain_on_plain_torch_module():
    assert "not a fusedrnn module" in fusedrnn.explain(torch.nn.LSTM(2, 3), torch.randn(1, 1, 2))


def test_explain_returns_why_an_explicit_backend_cannot_run():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    m = fusedrnn.LSTM(3, 4, backend="cuda")
    text = fusedrnn.explain(m, torch.randn(2, 1, 3))  # returns, where m(x) raises
    assert text.startswith("LSTM would raise RuntimeError: fusedrnn backend 'cuda' cannot run this call")


def test_explain_returns_a_bad_environment_setting(monkeypatch):
    monkeypatch.setenv(backends.ENV_VAR, "bogus")
    assert "would raise ValueError: FUSEDRNN_BACKEND='bogus'" in fusedrnn.explain(fusedrnn.GRU(3, 4),
                                                                                  torch.randn(2, 1, 3))


def test_available_backends_speaks_of_the_machine_not_an_input():
    for ok, reason in fusedrnn.available_backends().values():
        assert "input is on" not in reason, reason
    if not torch.cuda.is_available():
        ok, reason = fusedrnn.available_backends()["cuda"]
        assert not ok and ("no CUDA device" in reason or "extension" in reason)
