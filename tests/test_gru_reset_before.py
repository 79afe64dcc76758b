"""fusedrnn.GRU / GRUCell(reset_after=False): the GRU with its reset gate before the recurrent
product, n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn), beside torch.nn's (reset_after=True)
n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)).

Checked against a float64 oracle written here from the formulas (not fusedrnn's reference
backend): values and every gradient (input, h0, every weight and bias), at awkward sizes
(T=1, odd H, batch 3), both formulas, on the reference backend (modules, cells, two layers,
bidirectional, packed) and on the Triton kernels (every layout, forced, at tiny sizes; on
the CPU through TRITON_INTERPRET=1); the CUDA kernels' tests are tests/test_cuda_emulated.py's. Then what the option changes around the kernels: the
backend choice (never torch.nn, which computes the other formula), repr, conversion,
pickling, TorchScript and ONNX export.
"""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedrnn
from fusedrnn import backends, onnx_export, ops
from fusedrnn.ops.common import GRU_RESET_BEFORE

from support.float64_checks import assert_close, grads
# `concurrent`: the grid layout's programs in threads under the interpreter (a fixture)
from support.triton_layouts import forced, quick_launches, resident_backward_launches
from support.triton_projection import forced as proj_forced

RB = GRU_RESET_BEFORE


# -- the oracle ------------------------------------------------------------------------

def oracle_step(gx_t, h, w_hh, b_hh, reset_after):
    """One GRU step in float64 from its formulas; gx_t (B,3H) = W_i x + b_i, h (B,H)."""
    H = h.shape[1]
    w_hr, w_hz, w_hn = w_hh[:H], w_hh[H:2 * H], w_hh[2 * H:]
    b_hr, b_hz, b_hn = (b_hh[:H], b_hh[H:2 * H], b_hh[2 * H:]) if b_hh is not None else (0.0, 0.0, 0.0)
    x_r, x_z, x_n = gx_t[:, :H], gx_t[:, H:2 * H], gx_t[:, 2 * H:]
    r = torch.sigmoid(x_r + h @ w_hr.T + b_hr)
    z = torch.sigmoid(x_z + h @ w_hz.T + b_hz)
    if reset_after:
        n = torch.tanh(x_n + r * (h @ w_hn.T + b_hn))
    else:
        n = torch.tanh(x_n + (r * h) @ w_hn.T + b_hn)
    return (1 - z) * n + z * h


def oracle_layer(gx, h0, w_hh, b_hh, reset_after, lengths=None, reverse=False):
    """One direction: y (T,B,H) zero past each sequence's end, hT (B,H); each sequence on its own."""
    T, B = gx.shape[:2]
    ys, hT = torch.zeros(T, B, h0.shape[1], dtype=gx.dtype), []
    for b in range(B):
        L = T if lengths is None else int(lengths[b])
        h = h0[b:b + 1]
        for t in (range(L - 1, -1, -1) if reverse else range(L)):
            h = oracle_step(gx[t, b:b + 1], h, w_hh, b_hh, reset_after)
            ys = ys.index_put((torch.tensor([t]), torch.tensor([b])), h)
        hT.append(h)
    return ys, torch.cat(hT)


def oracle_gru(module, x, h0, reset_after, lengths=None):
    """A GRU module's output (T,B,D*H) and h_n (L*D,B,H) from its parameters, time-major x."""
    D = 2 if module.bidirectional else 1
    inp, h_n = x, []
    for layer in range(module.num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = getattr(module, "weight_ih" + sfx), getattr(module, "weight_hh" + sfx)
            b_ih = getattr(module, "bias_ih" + sfx) if module.bias else None
            b_hh = getattr(module, "bias_hh" + sfx) if module.bias else None
            gx = inp @ w_ih.T + (b_ih if b_ih is not None else 0.0)
            y, hT = oracle_layer(gx, h0[layer * D + d], w_hh, b_hh, reset_after, lengths, reverse=d == 1)
            outs.append(y)
            h_n.append(hT)
        inp = torch.cat(outs, dim=2)
    return inp, torch.stack(h_n)


# -- the oracle itself: torch.nn.GRU is the reset_after=True case ------------------------

def test_the_oracle_with_reset_after_is_torch_nn_gru():
    torch.manual_seed(0)
    m = nn.GRU(4, 5, num_layers=2, bidirectional=True).double()
    x, h0 = torch.randn(3, 3, 4, dtype=torch.float64), torch.randn(4, 3, 5, dtype=torch.float64)
    y, h = m(x, h0)
    oy, oh = oracle_gru(m, x, h0, reset_after=True)
    assert_close(oy, y, "y")
    assert_close(oh, h, "h_n")
    # and the two formulas differ on these inputs (else no test below could tell them apart)
    assert (oracle_gru(m, x, h0, reset_after=False)[0] - y).abs().max() > 1e-3


# -- the reference backend: modules, cells, packed ---------------------------------------

MODULE_CASES = [  # (T, layers, bidirectional, bias)
    (1, 1, False, True), (4, 2, True, True), (3, 1, True, False),
]


@pytest.mark.parametrize("reset_after", [False, True])
@pytest.mark.parametrize("T,layers,bidir,bias", MODULE_CASES)
def test_reference_module_matches_the_oracle(reset_after, T, layers, bidir, bias):
    torch.manual_seed(T + layers)
    m = fusedrnn.GRU(4, 5, num_layers=layers, bidirectional=bidir, bias=bias, reset_after=reset_after,
                     backend="reference").double()
    D = 2 if bidir else 1
    x = torch.randn(T, 3, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(layers * D, 3, 5, dtype=torch.float64, requires_grad=True)
    params = list(m.parameters())
    y, h = m(x, h0)
    oy, oh = oracle_gru(m, x, h0, reset_after)
    assert_close(y, oy, "y")
    assert_close(h, oh, "h_n")
    names = ["x", "h0"] + [n for n, _ in m.named_parameters()]
    for name, g, og in zip(names, grads((y, h), [x, h0, *params]), grads((oy, oh), [x, h0, *params])):
        assert_close(g, og, "d_" + name)


@pytest.mark.parametrize("batch_first", [False, True])
def test_reference_packed_sequence_matches_the_oracle(batch_first):
    torch.manual_seed(1)
    m = fusedrnn.GRU(4, 5, num_layers=2, bidirectional=True, reset_after=False, backend="reference",
                     batch_first=batch_first).double()
    lengths = torch.tensor([2, 4, 1])  # unsorted: the module sorts and restores the order
    x = torch.randn(4, 3, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    xin = x.transpose(0, 1) if batch_first else x
    packed = pack_padded_sequence(xin, lengths, batch_first=batch_first, enforce_sorted=False)
    out, h = m(packed, h0)
    y, _ = pad_packed_sequence(out, batch_first=batch_first)
    y = y.transpose(0, 1) if batch_first else y
    oy, oh = oracle_gru(m, x, h0, reset_after=False, lengths=lengths)
    assert_close(y, oy, "y")
    assert_close(h, oh, "h_n")
    params = list(m.parameters())
    for i, (g, og) in enumerate(zip(grads((y, h), [x, h0, *params]), grads((oy, oh), [x, h0, *params]))):
        assert_close(g, og, f"gradient {i}")


@pytest.mark.parametrize("reset_after", [False, True])
@pytest.mark.parametrize("batched,with_hx", [(True, True), (True, False), (False, True)])
def test_reference_cell_matches_the_oracle(reset_after, batched, with_hx):
    torch.manual_seed(2)
    c = fusedrnn.GRUCell(4, 5, reset_after=reset_after, backend="reference").double()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    xin, hin = (x, hx) if batched else (x[0], hx[0])
    h = c(xin, hin if with_hx else None)
    h0 = hin if with_hx else torch.zeros_like(hin)
    oh = oracle_step((xin.reshape(-1, 4) @ c.weight_ih.T + c.bias_ih), h0.reshape(-1, 5), c.weight_hh, c.bias_hh,
                     reset_after).reshape(h.shape)
    assert_close(h, oh, "h")
    leaves = [x] + ([hx] if with_hx else []) + list(c.parameters())
    for i, (g, og) in enumerate(zip(grads((h,), leaves), grads((oh,), leaves))):
        assert_close(g, og, f"gradient {i}")


# -- the Triton kernels (the interpreter on the CPU), every layout forced ----------------

def _fp32_bound(want):
    # the Triton suite's rule for float32 (tests/test_triton_recurrence.py)
    return 3e-5 * (1.0 + want.abs().max().item())


def _recurrence_outputs(backend, gx, h0, w_hh, b_hh, lengths, reverse, dtype):
    leaves = [t.detach().to(dtype).requires_grad_() if t is not None else None for t in (gx, h0, w_hh, b_hh)]
    y, hT = ops.recurrence(RB, leaves[0], leaves[1], None, leaves[2], leaves[3], lengths=lengths, reverse=reverse,
                           backend=backend)
    live = [t for t in leaves if t is not None]
    return [y, hT, *grads((y, hT), live)]


def check_triton_layer(B, H, T, lengths, reverse, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    gx = torch.randn(T, B, 3 * H, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, H, generator=g, dtype=torch.float64)
    w_hh = torch.randn(3 * H, H, generator=g, dtype=torch.float64) * H ** -0.5
    b_hh = torch.randn(3 * H, generator=g, dtype=torch.float64) if bias else None
    lens = None
    if lengths:
        lens = torch.randint(1, T + 1, (B,), generator=g)
        lens[0] = T
    # the truth: the oracle in float64, with autograd through it
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (gx, h0, w_hh, b_hh)]
    oy, ohT = oracle_layer(leaves[0], leaves[1], leaves[2], leaves[3], False, lens, reverse)
    truth = [oy, ohT, *grads((oy, ohT), [t for t in leaves if t is not None])]
    got = _recurrence_outputs("triton", gx, h0, w_hh, b_hh, lens, reverse, dtype)
    if dtype == torch.float32:
        bounds = [_fp32_bound(w) for w in truth]
    else:  # no worse than twice the error the reference backend makes in this dtype
        ref = _recurrence_outputs("reference", gx, h0, w_hh, b_hh, lens, reverse, dtype)
        bounds = [2.0 * (r.double() - w).abs().max().item() + 1e-6 * (1 + w.abs().max().item())
                  for r, w in zip(ref, truth)]
    names = ["y", "hT", "d_gx", "d_h0", "d_w_hh", "d_b_hh"]
    for name, o, w, bound in zip(names, got, truth, bounds):
        err = (o.double() - w).abs().max().item()
        assert err <= bound, f"{name}: max error {err:.3g} > {bound:.3g}"


def _launches() -> dict:
    """structure -> (B, H, launch): the smallest candidate of each structure the choice code has for
    this cell (tests/test_triton_layouts.py); several tiles per grid program come from a 2-SM
    device at B=3, far quicker in the interpreter than the 6-SM device's B=20."""
    return quick_launches(RB)


STRUCTURES = _launches()


def test_every_triton_structure_is_covered():
    assert set(STRUCTURES) == {"cta", "grid-resident", "grid-resident-pieces", "grid-streamed",
                               "grid-streamed-tiles", "solo-streamed", "solo-streamed-tiles"}


@pytest.mark.parametrize("key", sorted(STRUCTURES))
def test_triton_layout_matches_the_oracle(concurrent, monkeypatch, key):
    i = sorted(STRUCTURES).index(key)
    B, H, launch = STRUCTURES[key]
    # fp32 never keeps the reset-before GRU's W_hh resident (config.resident_ok): the resident layouts run in bf16
    dtype = torch.bfloat16 if launch.RESIDENT else torch.float32
    with forced(monkeypatch, launch):
        check_triton_layer(B, H, 2, lengths=i % 2 == 0, reverse=i % 3 == 1, dtype=dtype, bias=i != 2, seed=i)


def test_triton_resident_backward_holds_r_and_z_in_its_piece(monkeypatch):
    fwd, bwd = resident_backward_launches()
    assert (bwd.KP, bwd.NKP, bwd.N_TILES) == (2 * 16, 1, 1), bwd
    with proj_forced(monkeypatch, fwd, bwd):
        check_triton_layer(3, 16, 3, lengths=True, reverse=False, dtype=torch.bfloat16, seed=7)


def test_triton_one_step_odd_hidden_size():
    check_triton_layer(3, 5, 1, lengths=False, reverse=False, dtype=torch.float32)


def test_triton_module_two_layers_bidirectional_packed():
    """The module on the Triton kernels: both directions per launch, packed lengths, two layers,
    every gradient (the weight gradients of W_hn pair d_n with r ⊙ h_prev, computed outside)."""
    torch.manual_seed(3)
    m = fusedrnn.GRU(4, 5, num_layers=2, bidirectional=True, reset_after=False, backend="triton")
    lengths = torch.tensor([3, 1, 2])
    x = torch.randn(3, 3, 4, requires_grad=True)
    h0 = torch.randn(4, 3, 5, requires_grad=True)
    out, h = m(pack_padded_sequence(x, lengths, enforce_sorted=False), h0)
    y, _ = pad_packed_sequence(out)
    m64 = copy.deepcopy(m).double()
    x64, h064 = x.detach().double().requires_grad_(), h0.detach().double().requires_grad_()
    oy, oh = oracle_gru(m64, x64, h064, reset_after=False, lengths=lengths)
    for name, o, w in (("y", y, oy), ("h_n", h, oh)):
        assert (o.double() - w).abs().max().item() <= _fp32_bound(w), name
    names = ["x", "h0"] + [n for n, _ in m.named_parameters()]
    got = grads((y, h), [x, h0, *m.parameters()])
    want = grads((oy, oh), [x64, h064, *m64.parameters()])
    for name, g, w in zip(names, got, want):
        err = (g.double() - w).abs().max().item()
        assert err <= _fp32_bound(w), f"d_{name}: max error {err:.3g}"


def test_triton_cell_matches_the_oracle():
    torch.manual_seed(4)
    c = fusedrnn.GRUCell(4, 5, reset_after=False, backend="triton")
    x, hx = torch.randn(3, 4, requires_grad=True), torch.randn(3, 5, requires_grad=True)
    h = c(x, hx)
    c64 = copy.deepcopy(c).double()
    x64, hx64 = x.detach().double().requires_grad_(), hx.detach().double().requires_grad_()
    oh = oracle_step(x64 @ c64.weight_ih.T + c64.bias_ih, hx64, c64.weight_hh, c64.bias_hh, reset_after=False)
    assert (h.double() - oh).abs().max().item() <= _fp32_bound(oh)
    for g, w in zip(grads((h,), [x, hx, *c.parameters()]), grads((oh,), [x64, hx64, *c64.parameters()])):
        assert (g.double() - w).abs().max().item() <= _fp32_bound(w)
    with torch.no_grad():  # no fused decode step for this cell: the recurrence at T=1 runs it
        assert (c(x, hx).double() - oh).abs().max().item() <= _fp32_bound(oh)


# -- the backend choice: torch.nn computes the other formula -----------------------------

def test_auto_on_the_cpu_runs_the_reference_and_explains_why():
    m = fusedrnn.GRU(4, 5, reset_after=False)
    x = torch.randn(2, 3, 4)
    assert m.choose_backend(x, warn=False).name == "reference"
    text = fusedrnn.explain(m, x)
    assert "'reference'" in text and "reset_after=False" in text
    assert fusedrnn.GRU(4, 5).choose_backend(x, warn=False).name == "torch"  # the default is unchanged


@pytest.mark.parametrize("make", [lambda: fusedrnn.GRU(4, 5, reset_after=False, backend="torch"),
                                  lambda: fusedrnn.GRUCell(4, 5, reset_after=False, backend="torch")])
def test_an_explicit_torch_backend_refuses(make):
    m = make()
    x = torch.randn(3, 4) if isinstance(m, nn.GRUCell) else torch.randn(2, 3, 4)
    with pytest.raises(RuntimeError, match="fusedrnn backend 'torch' cannot run this call.*reset_after=False"):
        m(x)
    assert "would raise RuntimeError" in fusedrnn.explain(m, x)


def test_the_cuda_kernels_take_it_in_every_dtype():
    """csrc/passes_reset.cuh (checked on the emulator, tests/test_cuda_emulated.py); a projection
    stays the LSTM's."""
    from fusedrnn.ops import cuda
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert cuda.unsupported(RB, dtype, 8, directions=2) is None
    assert "proj_size exists only for lstm" in cuda.unsupported(RB, torch.float32, 8, proj_size=4)


def test_auto_on_a_gpu_takes_a_backend_that_runs_it(monkeypatch):
    """The choice on a CUDA device, its backends' answers stood in: the cuda kernels first; where
    they refuse (a stand-in reason), Triton; where Triton cannot either, the reference, never torch.nn."""
    dev = torch.device("cuda")
    answers = {"cuda": None, "triton": None}
    monkeypatch.setattr(backends, "why_not", lambda name, *a, **k: answers[name])
    choice = backends.choose("auto", dev, RB, torch.float32, 8, warn=False, batch=3, steps=4)
    assert choice.name == "cuda" and "reset_after=False" in choice.reason
    answers["cuda"] = "a stand-in refusal"
    choice = backends.choose("auto", dev, RB, torch.float32, 8, warn=False, batch=3, steps=4)
    assert choice.name == "triton" and "reset_after=False" in choice.reason
    answers["triton"] = "CUDA is not available"
    choice = backends.choose("auto", dev, RB, torch.float32, 8, warn=False, batch=3, steps=4)
    assert choice.name == "reference" and "cuda: a stand-in refusal" in choice.reason
    answers["cuda"] = None  # with a table or not, torch's cells are unaffected
    assert backends.choose("auto", dev, "gru", torch.float32, 8, warn=False).name == "cuda"


def test_onnx_export_runs_the_reference():
    assert onnx_export.backend_for_export("triton", RB, 0)[0] == "reference"
    assert onnx_export.backend_for_export("triton", "gru", 0)[0] == "torch"


# -- the module around it: defaults, parameters, repr, conversion, saving --------------

def test_parameters_and_state_dict_are_the_same_for_both_formulas():
    torch.manual_seed(5)
    a = fusedrnn.GRU(4, 5, num_layers=2, bidirectional=True)
    b = fusedrnn.GRU(4, 5, num_layers=2, bidirectional=True, reset_after=False)
    assert a.reset_after is True and b.reset_after is False
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    b.load_state_dict(a.state_dict())  # a checkpoint of either loads into the other
    assert fusedrnn.GRUCell(4, 5).reset_after is True


def test_repr_names_the_option_only_when_it_is_not_the_default():
    assert "reset_after" not in repr(fusedrnn.GRU(4, 5))
    assert repr(fusedrnn.GRU(4, 5, reset_after=False)) == "GRU(4, 5, reset_after=False)"
    assert repr(fusedrnn.GRUCell(4, 5, reset_after=False, backend="reference")) == \
        "GRUCell(4, 5, backend='reference', reset_after=False)"


@pytest.mark.parametrize("cls", [fusedrnn.GRU, fusedrnn.GRUCell])
def test_reset_after_must_be_a_bool(cls):
    with pytest.raises(TypeError, match="fusedrnn: reset_after must be a bool"):
        cls(4, 5, reset_after=0)


def test_convert_keeps_torchs_formula():
    model = nn.Sequential(nn.GRU(4, 5), nn.GRUCell(5, 5))
    fusedrnn.convert(model)
    assert isinstance(model[0], fusedrnn.GRU) and model[0].reset_after is True and model[0].cell == "gru"
    assert isinstance(model[1], fusedrnn.GRUCell) and model[1].reset_after is True


def test_pickling_and_copies_keep_the_option():
    m = fusedrnn.GRU(4, 5, reset_after=False, backend="reference")
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    for copied in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m), torch.load(buf)):
        assert copied.reset_after is False and copied.cell == RB
        x = torch.randn(2, 3, 4)
        torch.testing.assert_close(copied(x)[0], m(x)[0], rtol=0, atol=0)


def test_torchscript_refuses_rather_than_run_torchs_formula():
    with pytest.raises(RuntimeError, match="reset_after=False"):
        torch.jit.script(nn.Sequential(fusedrnn.GRU(4, 5, reset_after=False)))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_trace_and_export_keep_the_option(backend):
    """torch.jit.trace and torch.export record fusedrnn's path (the cell name travels in the
    kernel op's arguments), so the traced programs compute reset_after=False."""
    torch.manual_seed(6)
    m = fusedrnn.GRU(4, 5, reset_after=False, backend=backend)
    x = torch.randn(3, 2, 4)
    want = oracle_gru(copy.deepcopy(m).double(), x.double(), torch.zeros(1, 2, 5, dtype=torch.float64), False)[0]
    traced = torch.jit.trace(m, (x,), check_trace=False)
    exported = torch.export.export(m, (x,)).module()
    for run in (traced, exported):
        assert (run(x)[0].double() - want).abs().max().item() <= _fp32_bound(want)


def test_a_call_left_to_torch_nn_never_returns_its_formula(monkeypatch):
    """Where the fused path hands a call to torch.nn (which then raises torch's error, or returns
    an empty result), a result of torch.nn's own formula is refused instead of returned."""
    m = fusedrnn.GRU(4, 5, reset_after=False, backend="reference")
    monkeypatch.setattr(type(m), "_weight_of_another_dtype", lambda self, dtype: True)
    with pytest.raises(RuntimeError, match="fusedrnn.GRU: torch.nn has no GRU with reset_after=False"):
        m(torch.randn(2, 3, 4))
    c = fusedrnn.GRUCell(4, 5, reset_after=False, backend="reference")
    monkeypatch.setattr(type(c), "_fused_takes", lambda self, input, hx, weights: False)
    with pytest.raises(RuntimeError, match="fusedrnn.GRUCell cannot run this call"):
        c(torch.randn(3, 4))
    assert c(torch.randn(0, 4)).shape == (0, 5)  # an empty batch: the same for either formula
