"""The remembered decode path (fusedrnn/decode_memo.py): a module's or a cell's repeated no-grad
step skips the backend choice and torch.nn's checks, and anything that could change the
answer — the weights (in place, swapped, parametrized), dtype and device, train/eval, grad
mode, the settings, the backend, the registered kernels — is followed: each test compares the
remembered path against torch.nn (float64, the stand-in kernels of tests/support/plain_kernels.py
compute it exactly) or against torch.nn's own error."""
import copy
import os
import pickle

import pytest
import torch
from torch.nn.utils import parametrize

import fusedrnn
from fusedrnn import backends, settings
from fusedrnn.decode_memo import MEMO
from support import plain_kernels

F64 = torch.float64
B, I, H = 3, 4, 5


@pytest.fixture
def kernels(monkeypatch):
    """The plain-PyTorch kernels as backend "triton", with a fused step; the cells it stepped."""
    name = plain_kernels.install(monkeypatch)
    return name, plain_kernels.install_step(monkeypatch)


@pytest.fixture
def choices(monkeypatch):
    """Counts the backend choices the modules ask for (none on the remembered path)."""
    asked = []
    real = backends.choose_name
    monkeypatch.setattr(backends, "choose_name", lambda *a: asked.append(a) or real(*a))
    return asked


def pair(kind, backend, **kw):
    torch.manual_seed(0)
    ours = getattr(fusedrnn, kind)(I, H, backend=backend, dtype=F64, **kw)
    ref = getattr(torch.nn, kind)(I, H, dtype=F64, **kw)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def cell_args(dtype=F64):
    return torch.randn(B, I, dtype=dtype), (torch.randn(B, H, dtype=dtype), torch.randn(B, H, dtype=dtype))


def lstm_args(dtype=F64, layers=2):
    return torch.randn(1, B, I, dtype=dtype), (torch.randn(layers, B, H, dtype=dtype),
                                               torch.randn(layers, B, H, dtype=dtype))


def remembered(kernels, kind, args):
    """A one-layer module or a cell and its torch.nn twin, with a call that was remembered."""
    ours, ref = pair(kind, kernels[0])
    x, hx = args(layers=1) if kind == "LSTM" else args()
    same(ours, ref, x, hx)
    assert MEMO in ours.__dict__
    return ours, ref, x, hx


def weight(kind, which="hh"):
    return f"weight_{which}" if kind == "LSTMCell" else f"weight_{which}_l0"


def same(ours, ref, *args):
    with torch.no_grad():
        torch.testing.assert_close(ours(*args), ref(*args), rtol=0, atol=1e-12)


def same_error(ours, ref, *args):
    with pytest.raises(Exception) as want:
        with torch.no_grad():
            ref(*args)
    with pytest.raises(want.type) as got:
        with torch.no_grad():
            ours(*args)
    assert str(got.value) == str(want.value)


def same_outcome(ours, *args):
    """What a copy of `ours` without a memo gives (the full path): its result or its error."""
    fresh = copy.deepcopy(ours)
    assert MEMO not in fresh.__dict__
    try:
        with torch.no_grad():
            want = fresh(*args)
    except Exception:  # noqa: BLE001
        return same_error(ours, fresh, *args)
    with torch.no_grad():
        torch.testing.assert_close(ours(*args), want, rtol=0, atol=0)


@pytest.mark.parametrize("kind, args", [("LSTMCell", cell_args), ("LSTM", lstm_args)])
def test_a_repeated_decode_step_skips_the_choice(kernels, choices, kind, args):
    ours, ref = pair(kind, kernels[0], **({"num_layers": 2} if kind == "LSTM" else {}))
    x, hx = args()
    same(ours, ref, x, hx)
    assert len(choices) == 1 and MEMO in ours.__dict__
    stepped = len(kernels[1])
    same(ours, ref, x, hx)
    same(ours, ref, x, None)  # torch's zero state, on the same path
    assert len(choices) == 1 and len(kernels[1]) > stepped  # the fused step ran, nothing was asked


def test_the_grucell_and_rnncell_and_unbatched_calls_remember_too(kernels, choices):
    for kind in ("GRUCell", "RNNCell"):
        ours, ref = pair(kind, kernels[0])
        x, (h, _) = cell_args()
        same(ours, ref, x, h)
        asked = len(choices)
        same(ours, ref, x, h)
        same(ours, ref, x[0], h[0])  # another shape: asked and remembered anew
        same(ours, ref, x[0], h[0])
        assert len(choices) == asked + 1


@pytest.mark.parametrize("kind, args", [("LSTMCell", cell_args), ("LSTM", lstm_args)])
def test_weights_changed_in_place_or_swapped_are_followed(kernels, kind, args):
    ours, ref = pair(kind, kernels[0], **({"num_layers": 2} if kind == "LSTM" else {}))
    x, hx = args()
    same(ours, ref, x, hx)
    name = "weight_hh" if kind == "LSTMCell" else "weight_hh_l1"
    with torch.no_grad():
        for m in (ours, ref):
            getattr(m, name).mul_(2)
    same(ours, ref, x, hx)
    new = torch.randn_like(getattr(ref, name))
    for m in (ours, ref):
        setattr(m, name, torch.nn.Parameter(new.clone()))
    same(ours, ref, x, hx)
    with torch.no_grad():  # the tensor behind the same parameter replaced
        for m in (ours, ref):
            getattr(m, name).data = new * 3
    same(ours, ref, x, hx)


@pytest.mark.parametrize("kind, args", [("LSTMCell", cell_args), ("LSTM", lstm_args)])
def test_a_parametrization_and_functional_call_are_followed(kernels, kind, args):
    ours, ref, x, hx = remembered(kernels, kind, args)
    name = weight(kind)
    swapped = {name: torch.randn_like(getattr(ref, name))}
    with torch.no_grad():
        torch.testing.assert_close(torch.func.functional_call(ours, swapped, (x, hx)),
                                   torch.func.functional_call(ref, swapped, (x, hx)), rtol=0, atol=1e-12)
    same(ours, ref, x, hx)

    class Doubled(torch.nn.Module):
        def forward(self, w):
            return 2 * w
    for m in (ours, ref):
        parametrize.register_parametrization(m, name, Doubled())
    same(ours, ref, x, hx)
    same(ours, ref, x, hx)


@pytest.mark.parametrize("kind, args", [("LSTMCell", cell_args), ("LSTM", lstm_args)])
def test_a_dtype_or_device_change_is_followed(kernels, kind, args):
    ours, ref, x, hx = remembered(kernels, kind, args)
    for m in (ours, ref):
        m.float()
    same_error(ours, ref, x, hx)  # float64 input, float32 weights: torch.nn's error
    x32, hx32 = x.float(), tuple(s.float() for s in hx)
    with torch.no_grad():
        torch.testing.assert_close(ours(x32, hx32), ref(x32, hx32))
    name = weight(kind, "ih")
    with torch.no_grad():  # one weight's dtype changed behind the module's back
        for m in (ours, ref):
            getattr(m, name).data = getattr(m, name).data.double()
    same_error(ours, ref, x32, hx32)
    for m in (ours, ref):
        m.to("meta")
    same_error(ours, ref, x32, hx32)


def test_train_and_eval_are_followed(kernels):
    """Inter-layer dropout applies in training mode only, whichever path runs the call."""
    ours, ref = pair("LSTM", kernels[0], num_layers=2, dropout=0.5)
    x, hx = lstm_args()
    ours.eval(), ref.eval()
    same(ours, ref, x, hx)
    ours.train()
    with torch.no_grad():
        torch.manual_seed(3)
        dropped = ours(x, hx)
        fresh = copy.deepcopy(ours)  # no memo: the full path
        assert MEMO not in fresh.__dict__
        torch.manual_seed(3)
        torch.testing.assert_close(dropped, fresh(x, hx), rtol=0, atol=0)
    ours.eval()
    same(ours, ref, x, hx)


@pytest.mark.parametrize("kind, args", [("LSTMCell", cell_args), ("LSTM", lstm_args)])
def test_grad_mode_is_followed(kernels, kind, args):
    ours, ref, x, hx = remembered(kernels, kind, args)
    stepped = len(kernels[1])
    outs = [m(x, hx) for m in (ours, ref)]  # grad mode on: autograd records the call, not the fused step
    assert len(kernels[1]) == stepped
    for out, m in zip(outs, (ours, ref)):
        flat = [out[0], *out[1]] if kind == "LSTM" else list(out)
        sum(t.sum() for t in flat).backward()
    for p, q in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12)
    for m in (ours, ref):
        m.requires_grad_(False)
    torch.testing.assert_close(ours(x, hx), ref(x, hx), rtol=0, atol=1e-12)  # grad mode on, nothing to record
    assert len(kernels[1]) > stepped  # the fused step again
    stepped = len(kernels[1])
    out = ours(x.clone().requires_grad_(), hx)
    assert out[0].requires_grad and len(kernels[1]) == stepped


def test_settings_backend_and_registered_kernels_are_followed(kernels, monkeypatch):
    name, stepped = kernels
    ours, ref = pair("LSTMCell", "auto")
    x, hx = cell_args()
    monkeypatch.setenv(backends.ENV_VAR, name)  # monkeypatch refreshes the snapshot
    settings.refresh()
    same(ours, ref, x, hx)
    same(ours, ref, x, hx)
    assert len(stepped) == 2
    os.environ[backends.ENV_VAR] = "reference"  # not yet refreshed: the snapshot still says name
    same(ours, ref, x, hx)
    assert len(stepped) == 3
    settings.refresh()
    same(ours, ref, x, hx)
    assert len(stepped) == 3  # the reference ran it
    monkeypatch.setenv(backends.ENV_VAR, name)
    settings.refresh()
    same(ours, ref, x, hx)
    ours.backend = "reference"
    same(ours, ref, x, hx)
    assert len(stepped) == 4 and MEMO not in ours.__dict__
    ours.backend = name
    same(ours, ref, x, hx)
    monkeypatch.setitem(backends.KERNEL_BACKENDS, name, "no.such.module")  # repointed: asked again
    with pytest.raises(RuntimeError, match=f"backend '{name}' cannot be imported"):
        with torch.no_grad():
            ours(x, hx)


@pytest.mark.parametrize("kind, args", [("LSTMCell", cell_args), ("LSTM", lstm_args)])
def test_bad_calls_after_a_remembered_step_get_torch_errors(kernels, kind, args):
    ours, ref, x, (h, c) = remembered(kernels, kind, args)
    same_error(ours, ref, x, (h[..., :-1], c))       # a state of the wrong size
    same_outcome(ours, x, (h, c.float()))            # of another dtype
    same_error(ours, ref, x.float(), (h, c))         # an input of another dtype
    same_error(ours, ref, x[..., :-1], (h, c))       # of the wrong width
    same_error(ours, ref, x, h)                      # not a pair
    same_outcome(ours, x, (h.transpose(-1, -2), c))   # a transposed view (B, H swapped)
    same(ours, ref, x, [h, c] if kind == "LSTMCell" else (h, c))


def test_copies_and_pickles_carry_no_memo(kernels):
    ours, ref = pair("LSTM", kernels[0])
    x, hx = lstm_args(layers=1)
    same(ours, ref, x, hx)
    assert MEMO in ours.__dict__
    for other in (copy.deepcopy(ours), copy.copy(ours), pickle.loads(pickle.dumps(ours))):
        assert MEMO not in other.__dict__
        same(other, ref, x, hx)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_training_step_and_a_sequence_are_remembered_too(kernels, choices, bidirectional):
    """Any padded call is remembered (its backend choice asked once), with autograd as well."""
    ours, ref = pair("GRU", kernels[0], num_layers=2, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    x, h = torch.randn(3, B, I, dtype=F64), torch.randn(2 * D, B, H, dtype=F64)
    for _ in range(2):
        for m in (ours, ref):
            m.zero_grad()
            y, h_n = m(x, h)
            (y.sum() + h_n.sum()).backward()
        for p, q in zip(ours.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12)
    assert len(choices) == 1
    same(ours, ref, x, h)  # no grad: another key
    same(ours, ref, x, h)
    assert len(choices) == 2


def test_batch_first_and_the_gru_formula_are_followed(kernels):
    ours, ref = pair("GRU", kernels[0])
    x, h = torch.randn(1, B, I, dtype=F64), torch.randn(1, B, H, dtype=F64)
    same(ours, ref, x, h)
    for m in (ours, ref):
        m.batch_first = True
    same_error(ours, ref, x, h)  # now one sequence of 3 steps: the state has the wrong batch
    h = h[:, :1]
    same(ours, ref, x, h)
    ours.reset_after = False  # the other formula, which these kernels refuse: asked again
    with pytest.raises(RuntimeError, match="plain_kernels computes torch.nn's cells only, not gru_reset_before"):
        with torch.no_grad():
            ours(x, h)


@pytest.mark.parametrize("kind, args", [("LSTMCell", cell_args), ("LSTM", lstm_args)])
def test_a_regulariser_set_after_a_remembered_call_is_applied(kernels, kind, args):
    """Zoneout set on a module whose plain step was remembered: the next call takes the full
    path (its masks: in eval, the expectation p·h_{t-1} + (1-p)·h̃_t), not the remembered plain
    step, which would silently drop it."""
    ours, ref, x, hx = remembered(kernels, kind, args)
    ours.eval()
    ours.zoneout = 0.5
    with torch.no_grad():
        out = ours(x, hx)
        plain = ref(x, hx)
    h_new = plain[0] if kind == "LSTMCell" else plain[1][0]
    h_got = out[0] if kind == "LSTMCell" else out[1][0]
    h_prev = hx[0] if kind == "LSTMCell" else hx[0]
    torch.testing.assert_close(h_got, 0.5 * h_prev + 0.5 * h_new, rtol=0, atol=1e-12)
