"""Zoneout (`zoneout`, `zoneout_cell`) and variational recurrent dropout (`recurrent_dropout`) on
fusedrnn's modules and cells.

The truth is a float64 oracle written from the formulas (tests/support/regulariser_oracle.py),
which draws its masks itself in the order fusedrnn/regularisers.py documents: the same seed must
give the same masks, so every value and gradient (input, h0, c0, every weight and bias) must
match, in training (random masks) and in eval (the expectation), at T=1, odd H, batch 3, two
layers, both directions, packed. Then what the options change around the kernels: p = 0 is
today's path bit for bit, state_dicts are torch.nn's, bad probabilities raise as torch.nn's
`dropout` does, and the backend choice never runs torch.nn (nor the CUDA kernels) for them.
"""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedrnn
from fusedrnn import backends, onnx_export, regularisers
from fusedrnn.ops import library, reference
from support import plain_kernels
from support.float64_checks import assert_close, grads
from support import regulariser_oracle as oracle

MAKERS = {
    "lstm": lambda **kw: fusedrnn.LSTM(4, 5, **kw),
    "lstm_proj": lambda **kw: fusedrnn.LSTM(4, 5, proj_size=3, **kw),
    "gru": lambda **kw: fusedrnn.GRU(4, 5, **kw),
    "gru_reset_before": lambda **kw: fusedrnn.GRU(4, 5, reset_after=False, **kw),
    "rnn_tanh": lambda **kw: fusedrnn.RNN(4, 5, **kw),
    "rnn_relu": lambda **kw: fusedrnn.RNN(4, 5, nonlinearity="relu", **kw),
}
ALL = {"zoneout": 0.3, "zoneout_cell": 0.4, "recurrent_dropout": 0.35}


def regs_for(name: str) -> dict:
    return ALL if name.startswith("lstm") else {k: v for k, v in ALL.items() if k != "zoneout_cell"}


def state(m, B, seed):
    g = torch.Generator().manual_seed(seed)
    D = 2 if m.bidirectional else 1
    P = m.proj_size or m.hidden_size
    h0 = torch.randn(m.num_layers * D, B, P, generator=g, dtype=torch.float64).requires_grad_()
    c0 = torch.randn(m.num_layers * D, B, m.hidden_size, generator=g, dtype=torch.float64).requires_grad_() \
        if m.mode == "LSTM" else None
    return h0, c0


def run_and_compare(m, x, h0, c0, regs, training, seed, lengths=None, batch_first=False, bug=None):
    """The module's outputs and every gradient against the oracle's, both from `seed`."""
    m.train(training)
    hx = (h0, c0) if c0 is not None else h0
    torch.manual_seed(seed)
    order = None
    if lengths is None:
        y, hn = m(x.transpose(0, 1) if batch_first else x, hx)
        y = y.transpose(0, 1) if batch_first else y
    else:
        packed = pack_padded_sequence(x.transpose(0, 1) if batch_first else x, lengths, batch_first=batch_first,
                                      enforce_sorted=False)
        order = packed.sorted_indices
        out, hn = m(packed, hx)
        y = pad_packed_sequence(out, batch_first=batch_first, total_length=x.shape[0])[0]
        y = y.transpose(0, 1) if batch_first else y
    h, c = hn if c0 is not None else (hn, None)
    torch.manual_seed(seed)
    oy, oh, oc = oracle.module(m, x, h0, c0, regs, training, lengths, order, bug)
    leaves = [x, h0] + ([c0] if c0 is not None else []) + list(m.parameters())
    names = ["x", "h0"] + (["c0"] if c0 is not None else []) + [n for n, _ in m.named_parameters()]
    got = [y, h, c, *grads((y, h, c), leaves)]
    want = [oy, oh, oc, *grads((oy, oh, oc), leaves)]
    return list(zip(["y", "h_n", "c_n", *("d_" + n for n in names)], got, want))


CASES = {  # (T, layers, bidirectional, training)
    "train-T1": (1, 1, False, True), "train-2layers-bidir": (3, 2, True, True),
    "eval-2layers-bidir": (3, 2, True, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_reference_module_matches_the_oracle(name, case):
    T, layers, bidir, training = CASES[case]
    m = MAKERS[name](num_layers=layers, bidirectional=bidir, backend="reference", **regs_for(name)).double()
    x = torch.randn(T, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    h0, c0 = state(m, 3, seed=2)
    for what, got, want in run_and_compare(m, x, h0, c0, regs_for(name), training, seed=11):
        if want is not None:
            assert_close(got, want, what)


@pytest.mark.parametrize("name,batch_first", [("lstm", False), ("gru", True), ("rnn_tanh", False)])
def test_reference_packed_sequence_matches_the_oracle(name, batch_first):
    """A finished sequence's state is frozen whatever its masks say; masks follow the packed
    (sorted) batch order, which the lengths [2, 4, 1] permute."""
    m = MAKERS[name](num_layers=2, bidirectional=True, backend="reference", batch_first=batch_first,
                     **regs_for(name)).double()
    x = torch.randn(4, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_()
    h0, c0 = state(m, 3, seed=4)
    for what, got, want in run_and_compare(m, x, h0, c0, regs_for(name), True, seed=5,
                                           lengths=torch.tensor([2, 4, 1]), batch_first=batch_first):
        if want is not None:
            assert_close(got, want, what)


@pytest.mark.parametrize("bug,name", [("drop_in_blend", "gru"), ("zoneout_from_masked_h", "lstm"),
                                      ("drop_after_product", "rnn_tanh")])
def test_the_comparison_catches_a_planted_mistake(bug, name):
    """The oracle with a plausible mistake planted (the GRU's blend taking the masked h, zoneout
    keeping the masked h, the mask applied to the product instead of to h) disagrees with the
    module: the comparisons above can fail."""
    m = MAKERS[name](num_layers=1, backend="reference", **regs_for(name)).double()
    x = torch.randn(3, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6)).requires_grad_()
    h0, c0 = state(m, 3, seed=7)
    worst = max((got.double() - want).abs().max().item()
                for _, got, want in run_and_compare(m, x, h0, c0, regs_for(name), True, seed=8, bug=bug)
                if want is not None)
    assert worst > 1e-3


# -- the kernel-backend path: masks through the custom ops, weight gradients outside ---------

@pytest.mark.parametrize("directions", [1, 2])
@pytest.mark.parametrize("name", sorted(set(MAKERS) - {"gru_reset_before"}))  # the stand-in has torch.nn's cells
def test_kernel_backend_path_matches_the_oracle(monkeypatch, name, directions):
    """A kernel backend that takes the masks (the plain-PyTorch stand-in, hand-written BPTT):
    the masks reach it through EagerRecurrence, and dW_hh pairs d_gates with the masked state
    entering each step (common.recurrent_weight_grads). Both directions in one call or one per
    direction; two layers, packed, training."""
    backend = plain_kernels.install(monkeypatch, directions=directions)
    m = MAKERS[name](num_layers=2, bidirectional=True, backend=backend, **regs_for(name)).double()
    x = torch.randn(3, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(12)).requires_grad_()
    h0, c0 = state(m, 3, seed=13)
    for what, got, want in run_and_compare(m, x, h0, c0, regs_for(name), True, seed=14,
                                           lengths=torch.tensor([3, 1, 2])):
        if want is not None:
            assert_close(got, want, what)


@pytest.mark.parametrize("via", ["op", "function"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_custom_op_carries_the_masks(via, cell):
    """fusedrnn::rnn_layer_forward/backward with the mask arguments (the path graphs record) and
    EagerRecurrence give the reference's values and gradients for the same masks."""
    g = torch.Generator().manual_seed(15)
    T, B, H = 2, 3, 5
    G = 4 if cell == "lstm" else 3
    args = [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()
            for s in ((T, B, G * H), (B, H), (B, H), (G * H, H), (G * H,))]
    if cell != "lstm":
        args[2] = None
    masks = regularisers.layer_masks(regularisers.Regularisers(0.4, 0.3 if cell == "lstm" else 0.0, 0.5), True,
                                     T, B, 1, H, H, cell == "lstm", "cpu", torch.float64).kwargs()
    got = library.recurrence(plain_kernels.__name__, cell, *args, None, False, via=via, **masks)
    want = reference.recurrence(cell, *args, None, False, **masks)
    leaves = [a for a in args if a is not None]
    for what, o, w in zip(("y", "hT", "cT"), got, want):
        assert_close(o, w, what)
    for i, (o, w) in enumerate(zip(grads(got, leaves), grads(want, leaves))):
        assert_close(o, w, f"gradient {i}")


def test_double_backward_recomputes_with_the_masks():
    """backward(create_graph=True) through the kernel path differentiates a reference recomputation:
    it must use the forward's masks (second-order gradients equal the reference's)."""
    g = torch.Generator().manual_seed(16)
    args = [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in ((2, 3, 15), (3, 5), (15, 5))]
    masks = regularisers.layer_masks(regularisers.Regularisers(0.4, 0.0, 0.5), True, 2, 3, 1, 5, 5, False, "cpu",
                                     torch.float64).kwargs()
    second = []
    for run in (lambda: library.recurrence(plain_kernels.__name__, "gru", args[0], args[1], None, args[2], None, None,
                                           False, via="function", **masks),
                lambda: reference.recurrence("gru", args[0], args[1], None, args[2], None, **masks)):
        first = torch.autograd.grad(run()[0].pow(2).sum(), args, create_graph=True)
        second.append(grads(first, args))
    for i, (o, w) in enumerate(zip(*second)):
        assert_close(o, w, f"second-order gradient {i}")


def test_compiled_module_records_the_masks(monkeypatch):
    """torch.compile(fullgraph=True) of a module with zoneout on the kernel-backend path: the custom
    op takes the masks as arguments (eval: the expectation, no draw, so eager and compiled agree)."""
    backend = plain_kernels.install(monkeypatch)
    m = fusedrnn.LSTM(4, 5, num_layers=2, bidirectional=True, backend=backend, zoneout=0.3, zoneout_cell=0.2).eval()
    x = torch.randn(3, 3, 4, requires_grad=True)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    (y, (h, c)), (ey, (eh, ec)) = compiled(x), m(x)
    for got, want in ((y, ey), (h, eh), (c, ec)):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads((y, h, c), [x, *m.parameters()]), grads((ey, eh, ec), [x, *m.parameters()])):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


# -- cells -----------------------------------------------------------------------------

CELLS = {
    "lstm": lambda **kw: fusedrnn.LSTMCell(4, 5, **kw),
    "gru": lambda **kw: fusedrnn.GRUCell(4, 5, **kw),
    "gru_reset_before": lambda **kw: fusedrnn.GRUCell(4, 5, reset_after=False, **kw),
    "rnn_relu": lambda **kw: fusedrnn.RNNCell(4, 5, nonlinearity="relu", **kw),
}


def cell_oracle(c, name, x, h, cs, regs, training, drop):
    """One cell step in float64 with its masks drawn as documented (T = 1, D = 1); `drop`: the
    recurrent-dropout mask the cell must reuse, or None to draw it first."""
    draw = dict(regs, recurrent_dropout=0.0) if drop is not None else regs
    zh, zc, new_drop = oracle.draw_masks(draw, training, 1, x.shape[0], 1, 5, 5, name == "lstm")
    drop = drop if drop is not None else (new_drop[0] if new_drop is not None else None)
    gx = x @ c.weight_ih.T + c.bias_ih
    hn, cn = oracle.cell_step(name, gx, h, cs, c.weight_hh, c.bias_hh, None, drop)
    if zh is not None:
        hn = zh[0, :, 0] * h + (1 - zh[0, :, 0]) * hn
    if zc is not None:
        cn = zc[0, :, 0] * cs + (1 - zc[0, :, 0]) * cn
    return hn, cn, drop


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_reference_cell_matches_the_oracle_over_two_steps(name, training):
    """Two calls: fresh zoneout masks each call, one recurrent-dropout mask for both (the
    sequence's), redrawn after reset_recurrent_dropout_mask()."""
    regs = regs_for(name)
    c = CELLS[name](backend="reference", **regs).double().train(training)
    g = torch.Generator().manual_seed(9)
    xs = [torch.randn(3, 4, dtype=torch.float64, generator=g).requires_grad_() for _ in range(3)]
    h0 = torch.randn(3, 5, dtype=torch.float64, generator=g).requires_grad_()
    c0 = torch.randn(3, 5, dtype=torch.float64, generator=g).requires_grad_() if name == "lstm" else None
    torch.manual_seed(10)
    h, cs = h0, c0
    for i, x in enumerate(xs):
        if i == 2:
            c.reset_recurrent_dropout_mask()
        out = c(x, (h, cs) if name == "lstm" else h)
        h, cs = out if name == "lstm" else (out, None)
    torch.manual_seed(10)
    oh, ocs, drop = h0, c0, None
    for i, x in enumerate(xs):
        oh, ocs, drop = cell_oracle(c, name, x, oh, ocs, regs, training, None if i == 2 else drop)
    leaves = [*xs, h0] + ([c0] if c0 is not None else []) + list(c.parameters())
    assert_close(h, oh, "h")
    if name == "lstm":
        assert_close(cs, ocs, "c")
    for i, (gg, og) in enumerate(zip(grads((h, cs), leaves), grads((oh, ocs), leaves))):
        assert_close(gg, og, f"gradient {i}")


# -- what p = 1 and p = 0 mean -------------------------------------------------------------

def test_zoneout_one_keeps_the_initial_state_and_dropout_one_cuts_the_recurrence():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 4)
    m = fusedrnn.LSTM(4, 5, zoneout=1.0, zoneout_cell=1.0).train()
    h0, c0 = torch.randn(1, 3, 5), torch.randn(1, 3, 5)
    y, (h, c) = m(x, (h0, c0))
    assert torch.equal(y, h0.expand(4, 3, 5)) and torch.equal(h, h0) and torch.equal(c, c0)
    # recurrent_dropout=1: the product sees zeros, as with W_hh = 0 (and no recurrent-dropout draw differs)
    r = fusedrnn.RNN(4, 5, recurrent_dropout=1.0, backend="reference").train()
    plain = fusedrnn.RNN(4, 5, backend="reference")
    plain.load_state_dict(r.state_dict())
    with torch.no_grad():
        plain.weight_hh_l0.zero_()
    assert torch.allclose(r(x)[0], plain(x)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_all_zero_is_bit_identical_to_the_plain_module(backend):
    torch.manual_seed(0)
    a = fusedrnn.GRU(4, 5, num_layers=2, bidirectional=True, backend=backend)
    b = fusedrnn.GRU(4, 5, num_layers=2, bidirectional=True, backend=backend, zoneout=0.0, recurrent_dropout=0)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 3, 4)
    torch.manual_seed(1)
    ya = a(x)[0]
    torch.manual_seed(1)
    yb = b(x)[0]
    assert torch.equal(ya, yb)
    assert b.choose_backend(x, warn=False).name == a.choose_backend(x, warn=False).name
    assert "zoneout" not in repr(b) and "_regularisers" not in b.__dict__  # nothing of its own: as torch.nn's
    if backend == "auto":  # and on the CPU that is torch.nn itself
        t = nn.GRU(4, 5, num_layers=2, bidirectional=True)
        t.load_state_dict(a.state_dict())
        assert torch.equal(t(x)[0], yb)


def test_recurrent_dropout_in_eval_is_the_plain_cell_and_draws_nothing():
    torch.manual_seed(0)
    a = fusedrnn.LSTM(4, 5, num_layers=2, backend="reference")
    b = fusedrnn.LSTM(4, 5, num_layers=2, backend="reference", recurrent_dropout=0.5).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 3, 4)
    before = torch.get_rng_state()
    assert torch.equal(a(x)[0], b(x)[0])
    assert torch.equal(before, torch.get_rng_state())
    auto = fusedrnn.LSTM(4, 5, recurrent_dropout=0.5).eval()
    assert auto.choose_backend(x, warn=False).name == "torch"  # the plain cell: torch.nn computes it under auto
    assert auto.train().choose_backend(x, warn=False).name == "reference"


def test_training_draws_fresh_masks_per_call():
    m = fusedrnn.GRU(4, 5, zoneout=0.5, recurrent_dropout=0.5).train()
    x = torch.randn(3, 3, 4)
    assert not torch.equal(m(x)[0], m(x)[0])


# -- options: checks, parameters, repr, conversion ------------------------------------------

@pytest.mark.parametrize("option", ["zoneout", "zoneout_cell", "recurrent_dropout"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "0.2", float("nan")])
def test_a_bad_probability_raises_as_torch_nn_dropout_does(option, bad):
    with pytest.raises(ValueError, match=f"^{option} should be a number in range \\[0, 1\\] representing"):
        fusedrnn.LSTM(4, 5, **{option: bad})
    with pytest.raises(ValueError, match="dropout should be a number in range \\[0, 1\\] representing"):
        nn.LSTM(4, 5, dropout=bad)  # the style it follows


@pytest.mark.parametrize("make", [lambda: fusedrnn.GRU(4, 5, zoneout_cell=0.1),
                                  lambda: fusedrnn.RNN(4, 5, zoneout_cell=0.1),
                                  lambda: fusedrnn.GRUCell(4, 5, zoneout_cell=0.1)])
def test_zoneout_cell_needs_a_cell_state(make):
    with pytest.raises(ValueError, match="zoneout_cell applies to the LSTM's cell state only"):
        make()


def test_parameters_state_dict_repr_and_conversion():
    t = nn.LSTM(4, 5, num_layers=2)
    m = fusedrnn.LSTM(4, 5, num_layers=2, zoneout=0.1, zoneout_cell=0.2, recurrent_dropout=0.3)
    assert list(m.state_dict()) == list(t.state_dict())
    m.load_state_dict(t.state_dict())
    assert repr(m) == "LSTM(4, 5, num_layers=2, zoneout=0.1, zoneout_cell=0.2, recurrent_dropout=0.3)"
    converted = fusedrnn.convert(nn.Sequential(nn.GRU(4, 5)))[0]
    assert converted.regularisers == (0.0, 0.0, 0.0) and not converted._regularised()
    converted.zoneout = 0.25  # set later: checked as at construction, and it takes effect
    assert converted._regularised() and "zoneout=0.25" in repr(converted)
    with pytest.raises(ValueError, match="zoneout_cell applies to the LSTM's cell state only"):
        converted.zoneout_cell = 0.1
    with pytest.raises(ValueError, match="recurrent_dropout should be a number in range"):
        converted.recurrent_dropout = 2


def test_saving_keeps_the_options(tmp_path):
    m = fusedrnn.GRUCell(4, 5, zoneout=0.2, recurrent_dropout=0.4)
    torch.save(m, tmp_path / "m.pt")
    for back in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m), torch.load(tmp_path / "m.pt")):
        assert back.regularisers == (0.2, 0.0, 0.4) and back._regularised()


# -- the backend choice -----------------------------------------------------------------

def test_auto_on_the_cpu_runs_the_reference_and_explains_why():
    m = fusedrnn.LSTM(4, 5, zoneout=0.1)
    x = torch.randn(2, 3, 4)
    assert m.choose_backend(x, warn=False).name == "reference"
    text = fusedrnn.explain(m, x)
    assert "'reference'" in text and "zoneout" in text


@pytest.mark.parametrize("make", [lambda: fusedrnn.GRU(4, 5, zoneout=0.2, backend="torch"),
                                  lambda: fusedrnn.RNNCell(4, 5, zoneout=0.2, backend="torch")])
def test_an_explicit_torch_backend_refuses(make):
    m = make()
    x = torch.randn(3, 4) if isinstance(m, nn.RNNCell) else torch.randn(2, 3, 4)
    with pytest.raises(RuntimeError, match="fusedrnn backend 'torch' cannot run this call.*zoneout"):
        m(x)
    assert "would raise RuntimeError" in fusedrnn.explain(m, x)


class _Probe:
    """A kernel backend that runs on any device and declines exactly what `unsupported` declines."""

    def __init__(self, unsupported):
        self.unsupported = unsupported

    @staticmethod
    def availability(device):
        return None


def test_the_cuda_kernels_run_them_except_with_a_projection(monkeypatch):
    """The CUDA backend's own `unsupported` runs regularised calls except with proj_size (declined by
    name), so on a GPU 'auto' takes cuda, the first fused backend that runs them, and else the next
    one (never torch.nn); forcing cuda with a projection raises the reason."""
    from fusedrnn.ops import cuda, triton
    assert cuda.unsupported("lstm", torch.float32, 8, regularised=True) is None
    why = cuda.unsupported("lstm", torch.float32, 8, 4, regularised=True)
    assert why is not None and "zoneout" in why and "proj_size" in why
    assert cuda.unsupported("lstm", torch.float32, 8, 4) is None
    mods = {"cuda": _Probe(cuda.unsupported), "triton": _Probe(triton.unsupported)}
    monkeypatch.setattr(backends, "kernel_module", lambda name: mods[name])
    dev = torch.device("cuda")
    for cell in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        choice = backends.choose("auto", dev, cell, torch.float32, 8, warn=False, batch=3, steps=4, regularised=True)
        assert choice.name == "cuda", (cell, choice)
    # the Triton kernels run a projection and the reset-before GRU with the masks, the CUDA ones neither
    for cell, proj in (("lstm", 4), ("gru_reset_before", 0)):
        choice = backends.choose("auto", dev, cell, torch.float32, 8, proj, warn=False, batch=3, steps=4,
                                 regularised=True)
        assert choice.name == "triton", (cell, choice)
    # where Triton declines too (here a stand-in that declines everything), the reference: never torch.nn
    mods["triton"] = _Probe(lambda *a, **k: "a stand-in that declines")
    choice = backends.choose("auto", dev, "lstm", torch.float32, 8, 4, warn=False, batch=3, steps=4, regularised=True)
    assert choice.name == "reference" and "cuda: the CUDA kernels do not implement zoneout" in choice.reason
    with pytest.raises(RuntimeError, match="fusedrnn backend 'cuda' cannot run this call: the CUDA kernels do not "
                                           "implement zoneout .* with proj_size"):
        backends.choose("cuda", dev, "lstm", torch.float32, 8, 4, warn=False, regularised=True)
    assert backends.choose("cuda", dev, "gru", torch.float32, 8, warn=False, regularised=True).name == "cuda"


def test_a_backend_without_the_keyword_is_taken_to_decline(monkeypatch):
    mods = {"triton": _Probe(lambda cell, dtype, h, p, directions=1: None)}
    monkeypatch.setattr(backends, "kernel_module", lambda name: mods[name])
    why = backends.why_not("triton", torch.device("cuda"), "gru", torch.float32, 8, 0, regularised=True)
    assert why is not None and "zoneout" in why


def test_torchscript_refuses_and_onnx_export_runs_the_reference():
    with pytest.raises(RuntimeError, match="zoneout or recurrent dropout has no torch.nn twin"):
        torch.jit.script(fusedrnn.GRU(4, 5, recurrent_dropout=0.2))
    assert onnx_export.backend_for_export("triton", "lstm", 0, regularised=True)[0] == "reference"
    assert onnx_export.backend_for_export("triton", "lstm", 0)[0] == "torch"
