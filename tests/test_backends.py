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


# -- calls too large for the kernels' 32-bit offsets (T*B*D*G*H > 2**31 - 1) -------------

def _on_a_gpu_with_every_kernel(monkeypatch):
    """The backend choice as on a GPU where both kernel backends can run (no dispatch table)."""
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    monkeypatch.setattr(backends, "why_not", lambda name, *a, **k: None)
    monkeypatch.setattr(backends.tuning, "table_for", lambda device: None)
    monkeypatch.setattr(backends, "_warned", set())
    real = backends.choose
    monkeypatch.setattr(backends, "choose", lambda req, dev, *a, **k: real(req, torch.device("cuda"), *a, **k))


def _no_memory(*shape):
    """A float32 tensor of `shape` with one element behind it (stride 0): nothing big is allocated."""
    return torch.zeros((1,) * len(shape)).expand(*shape)


def test_auto_falls_back_to_torch_for_a_call_too_large_for_32_bit_offsets(monkeypatch):
    """LSTM H=1024, B=128, T=4096 (cuDNN runs it): T*B*G*H = 2**31 elements, one past the
    kernels' offsets. 'auto' runs torch.nn, says why in explain, and warns once (not per size)."""
    _on_a_gpu_with_every_kernel(monkeypatch)
    m = fusedrnn.LSTM(1, 1024)
    fits, too_large = _no_memory(4095, 128, 1), _no_memory(4096, 128, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert m._backend_name(fits) == "cuda"
        assert m._backend_name(too_large) == "torch"
        assert m._backend_name(_no_memory(5000, 128, 1)) == "torch"
    fell_back = [w for w in caught if "too large for the fused kernels" in str(w.message)]
    assert len(fell_back) == 1, [str(w.message) for w in caught]
    text = fusedrnn.explain(m, too_large)
    assert text.startswith("LSTM would run backend 'torch': 'auto' fell back to torch.nn (cuDNN)"), text
    assert "T*B*G*H (gx and its gradient) = 2147483648 elements exceeds 2147483647" in text


def test_auto_counts_both_directions_of_a_bidirectional_layer(monkeypatch):
    _on_a_gpu_with_every_kernel(monkeypatch)
    one, both = fusedrnn.GRU(1, 1024), fusedrnn.GRU(1, 1024, bidirectional=True, batch_first=True)
    assert one._backend_name(_no_memory(5000, 128, 1)) == "cuda"  # 3*1024*128*5000 < 2**31
    assert both._backend_name(_no_memory(128, 5000, 1)) == "torch"  # twice that is not
    assert "T*B*D*G*H" in fusedrnn.explain(both, _no_memory(128, 5000, 1))


def test_auto_too_large_overrides_the_dispatch_table(monkeypatch):
    """A table ranking a kernel backend first still gets torch.nn for a call too large for it."""
    _on_a_gpu_with_every_kernel(monkeypatch)

    class Hit:
        entry = type("Entry", (), {"ranking": ("triton", "cuda")})

        @staticmethod
        def reason(cand, passed_over):
            return f"table picked {cand}; passed over {passed_over}"

    table = type("Table", (), {"lookup": lambda self, *a: Hit(), "path": type("P", (), {"name": "h100.json"})})()
    monkeypatch.setattr(backends.tuning, "table_for", lambda device: table)
    assert backends.choose("auto", torch.device("cuda"), "rnn_tanh", torch.float16, 64, batch=8, steps=10).name == \
        "triton"
    with pytest.warns(RuntimeWarning, match="too large for the fused kernels"):
        choice = backends.choose("auto", torch.device("cuda"), "rnn_tanh", torch.float16, 2**16, batch=2**9,
                                 steps=2**6)
    assert choice.name == "torch" and "h100.json" in choice.reason


def test_an_explicit_kernel_backend_refuses_a_call_too_large_before_allocating(monkeypatch):
    """backend='triton' (it runs here, in the interpreter): ValueError naming the limit before
    the input projection (T*B*G*H floats, 8 GiB here) is computed."""
    def no_projection(*a, **k):
        raise AssertionError("the input projection was allocated before the size check")

    monkeypatch.setattr(fusedrnn.functional, "_sequence_layer", no_projection)
    m = fusedrnn.LSTM(1, 1024, backend="triton")
    with pytest.raises(ValueError, match=r"32-bit offsets, but T\*B\*G\*H .* = 2147483648 elements"):
        m(_no_memory(4096, 128, 1))
    assert "would raise ValueError" in fusedrnn.explain(m, _no_memory(4096, 128, 1))
