"""Zoneout and recurrent dropout in the Triton kernels (TRITON_INTERPRET=1 on the CPU), against
the float64 oracle written from the formulas (tests/support/regulariser_oracle.py): every layout
forced, forward and every gradient (gx, h0, c0, W_hh, b_hh; dW_hh pairs d_gates with the masked
state), lengths and reverse; then the modules and a cell on the kernels. The masks are given,
so the kernels and the oracle compute the same function of the same masks.
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedrnn
from fusedrnn import ops
from fusedrnn.ops.triton import config
from support import regulariser_oracle as oracle
from support.float64_checks import grads
from support.sampling import full_run
# `concurrent`: the grid layout's programs in threads under the interpreter (a fixture)
from support.triton_layouts import SMALL_DEVICE, forced, forced_launches, quick_launches, resident_backward_launches
from support.triton_projection import forced as proj_forced, structures as proj_structures

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1, "gru_reset_before": 3}
#: the cells that take turns over the structures (the reset-before GRU runs every structure: RB_CASES)
TURNS = ("gru", "lstm", "rnn_relu", "rnn_tanh")
RB = "gru_reset_before"
# recurrent dropout's scale 1/(1 - 0.5) = 2 is exact in every dtype
REGS = {"zoneout": 0.4, "zoneout_cell": 0.3, "recurrent_dropout": 0.5}
ROOT = Path(__file__).resolve().parents[1]


def _fp32_bound(want):
    # the Triton suite's rule for float32 (tests/test_triton_recurrence.py)
    return 3e-5 * (1.0 + want.abs().max().item())


def layer_inputs(cell, B, H, T, lengths, seed, P=0):
    """One layer's float64 inputs (P: the LSTM projection's size, 0 for none) and its masks."""
    g = torch.Generator().manual_seed(seed)
    G, W = GATES[cell], P or H
    args = dict(gx=torch.randn(T, B, G * H, generator=g, dtype=torch.float64),
                h0=torch.randn(B, W, generator=g, dtype=torch.float64),
                c0=torch.randn(B, H, generator=g, dtype=torch.float64) if cell == "lstm" else None,
                w_hh=torch.randn(G * H, W, generator=g, dtype=torch.float64) * W ** -0.5,
                b_hh=torch.randn(G * H, generator=g, dtype=torch.float64),
                w_hr=torch.randn(P, H, generator=g, dtype=torch.float64) * H ** -0.5 if P else None)
    lens = None
    if lengths:
        lens = torch.randint(1, T + 1, (B,), generator=g)
        lens[0] = T
    torch.manual_seed(seed)
    zh, zc, drop = oracle.draw_masks(REGS, True, T, B, 1, W, H, cell == "lstm")
    masks = dict(zoneout_h=zh[:, :, 0], zoneout_c=zc[:, :, 0] if zc is not None else None, drop_h=drop[0])
    return args, lens, masks


def _outputs(backend, cell, args, lens, reverse, masks, dtype):
    leaves = {k: v.detach().to(dtype).requires_grad_() for k, v in args.items() if v is not None}
    kw = {k: v for k, v in masks.items() if v is not None}
    out = ops.recurrence(cell, leaves["gx"], leaves["h0"], leaves.get("c0"), leaves["w_hh"], leaves["b_hh"],
                         lengths=lens, reverse=reverse, backend=backend, w_hr=leaves.get("w_hr"), **kw)
    return [*out, *grads(out, list(leaves.values()))]


def check_layer(cell, B, H, T, lengths, reverse, dtype, seed, P=0):
    args, lens, masks = layer_inputs(cell, B, H, T, lengths, seed, P)
    leaves = {k: v.clone().requires_grad_() for k, v in args.items() if v is not None}
    y, hT, cT = oracle.layer(cell, leaves["gx"], leaves["h0"], leaves.get("c0"), leaves["w_hh"], leaves["b_hh"],
                             leaves.get("w_hr"), lens, reverse, masks["zoneout_h"], masks["zoneout_c"],
                             masks["drop_h"])
    out = [y, hT] + ([cT] if cell == "lstm" else [])
    truth = [*out, *grads(out, list(leaves.values()))]
    got = _outputs("triton", cell, args, lens, reverse, masks, dtype)
    if dtype == torch.float32:
        bounds = [_fp32_bound(w) for w in truth]
    else:  # no worse than twice the error the reference backend makes in this dtype
        ref = _outputs("reference", cell, args, lens, reverse, masks, dtype)
        bounds = [2.0 * (r.double() - w).abs().max().item() + 1e-6 * (1 + w.abs().max().item())
                  for r, w in zip(ref, truth)]
    names = ["y", "hT"] + (["cT"] if cell == "lstm" else []) + ["d_" + k for k in leaves]
    assert len(got) == len(truth) == len(names)
    for name, o, w, bound in zip(names, got, truth, bounds):
        err = (o.double() - w).abs().max().item()
        assert err <= bound, f"{cell} {name}: max error {err:.3g} > {bound:.3g}"


def _cases() -> dict:
    """structure -> (cell, B, H, launch), the cells taking turns over the structures; several tiles
    per grid program from a 2-SM device at B=3 (far quicker in the interpreter than B=20)."""
    cells = itertools.cycle(TURNS)
    out = {}
    two_sms = config.DeviceLimits(2, 227 * 1024, 65536)
    for key in sorted(forced_launches("lstm", batch_tiles=False)):
        cell = next(cells)
        out[key] = (cell, *forced_launches(cell, batch_tiles=False)[key])
        if key == "grid-streamed-tiles":
            out[key] = (cell, *next((3, 17, c) for c in config.candidates(cell, 3, 17, torch.float32, two_sms, "fwd",
                                                                          "grid") if c.N_TILES > 1))
    return out


CASES = _cases()


def _rb_cases() -> dict:
    """structure -> (B, H, launch) of the reset-before GRU: its two phases per step meet the masks
    in every structure (several tiles per grid program from a 2-SM device at B=3)."""
    return quick_launches(RB)


RB_CASES = _rb_cases()


def _proj_cases() -> dict:
    """'fwd-'/'bwd-' structure -> (B, H, P, forward launch, backward launch): every structure the
    LSTM projection has on a small device, in each direction, once (its other direction taking
    the structures in turn); several tiles per grid program from a 2-SM device at B=3 (far
    quicker in the interpreter than the small device's B=20)."""
    out = {}
    two_sms = config.DeviceLimits(2, 227 * 1024, 65536)
    for B, H, P, dev in ((3, 17, 6, SMALL_DEVICE), (3, 40, 12, SMALL_DEVICE), (3, 17, 6, two_sms)):
        f = proj_structures("lstm", B, H, P, 1, torch.bfloat16, "fwd", dev)
        b = proj_structures("lstm", B, H, P, 1, torch.bfloat16, "bwd", dev)
        fk, bk = sorted(f), sorted(b)
        for i, k in enumerate(fk):
            out.setdefault("fwd-" + k, (B, H, P, f[k], b[bk[i % len(bk)]]))
        for i, k in enumerate(bk):
            out.setdefault("bwd-" + k, (B, H, P, f[fk[i % len(fk)]], b[k]))
    return out


PROJ_CASES = _proj_cases()


def test_every_triton_structure_is_covered():
    for cases in (CASES, RB_CASES):
        assert set(cases) == {"cta", "grid-resident", "grid-resident-pieces", "grid-streamed",
                              "grid-streamed-tiles", "solo-streamed", "solo-streamed-tiles"}


@pytest.mark.parametrize("key", sorted(CASES))
def test_triton_layout_matches_the_oracle(concurrent, monkeypatch, key):
    i = sorted(CASES).index(key)
    cell, B, H, launch = CASES[key]
    # with the masks fp32 never keeps W_hh resident (config.resident_ok): the resident layouts run in bf16
    dtype = torch.bfloat16 if launch.RESIDENT else torch.float32
    with forced(monkeypatch, launch):
        check_layer(cell, B, H, 2, lengths=i % 2 == 0, reverse=i % 3 == 1, dtype=dtype, seed=i)


@pytest.mark.parametrize("key", sorted(RB_CASES))
def test_triton_reset_before_gru_layout_matches_the_oracle(concurrent, monkeypatch, key):
    """The reset-before GRU with zoneout and recurrent dropout: the n gate's product takes
    r ⊙ (d ⊙ h_{t-1}) (exchanged between the step's phases), the blend the unmasked h_{t-1}."""
    i = sorted(RB_CASES).index(key)
    B, H, launch = RB_CASES[key]
    dtype = torch.bfloat16 if launch.RESIDENT else torch.float32
    with forced(monkeypatch, launch):
        check_layer(RB, B, H, 2, lengths=i % 2 == 1, reverse=i % 3 == 0, dtype=dtype, seed=10 + i)


def test_triton_reset_before_gru_resident_backward_piece_of_r_and_z(monkeypatch):
    """The resident backward whose piece holds r's and z's rows alone (2H: config.resident_bwd_gates),
    the n gate's in a piece of their own, with the masks: d ⊙ W_hnᵀ d_n, the gradient of r ⊙ (d ⊙ h)."""
    fwd, bwd = resident_backward_launches()
    assert (bwd.KP, bwd.NKP) == (32, 1), bwd
    with proj_forced(monkeypatch, fwd, bwd):
        check_layer(RB, 3, 16, 3, lengths=True, reverse=True, dtype=torch.bfloat16, seed=31)


def test_every_projection_structure_is_covered():
    assert {"fwd-cta", "fwd-solo-streamed-tiles", "fwd-grid-resident-tile", "fwd-grid-streamed-tile",
            "fwd-grid-streamed-tiles", "bwd-solo-streamed-tiles", "bwd-grid-streamed-tile",
            "bwd-grid-streamed-tiles"} <= set(PROJ_CASES), PROJ_CASES.keys()


@pytest.mark.parametrize("key", sorted(PROJ_CASES))
def test_triton_projection_layout_matches_the_oracle(monkeypatch, key):
    """The LSTM with proj_size: zoneout of h (P wide) after W_hr, of c in the cell, recurrent dropout
    on the P-wide h_{t-1}; every gradient, dW_hr included."""
    i = sorted(PROJ_CASES).index(key)
    B, H, P, fwd, bwd = PROJ_CASES[key]
    dtype = torch.bfloat16 if fwd.RESIDENT or bwd.RESIDENT else torch.float32
    with proj_forced(monkeypatch, fwd, bwd):
        check_layer("lstm", B, H, 2, lengths=i % 2 == 0, reverse=i % 3 == 1, dtype=dtype, seed=20 + i, P=P)


@pytest.mark.parametrize("cell", sorted(GATES))
def test_triton_one_step_odd_hidden_size(cell):
    check_layer(cell, 3, 5, 1, lengths=False, reverse=False, dtype=torch.float32, seed=1)


def test_triton_one_step_odd_hidden_size_projected():
    check_layer("lstm", 3, 5, 1, lengths=False, reverse=False, dtype=torch.float32, seed=2, P=3)


@pytest.mark.parametrize("name", ["lstm", "lstm_proj", "gru", "gru_reset_before"])
def test_triton_module_two_layers_bidirectional_packed(name):
    """The modules on the Triton kernels: masks drawn as documented, both directions per launch,
    packed lengths, two layers, every gradient against the float64 oracle from the same seed."""
    lstm = name.startswith("lstm")
    regs = REGS if lstm else {k: v for k, v in REGS.items() if k != "zoneout_cell"}
    make = fusedrnn.LSTM if lstm else fusedrnn.GRU
    extra = dict(reset_after=False) if name == RB else dict(proj_size=3) if name == "lstm_proj" else {}
    torch.manual_seed(3)
    m = make(4, 5, num_layers=2, bidirectional=True, backend="triton", **regs, **extra)
    lengths = torch.tensor([3, 1, 2])
    x = torch.randn(3, 3, 4, requires_grad=True)
    h0 = torch.randn(4, 3, 3 if name == "lstm_proj" else 5, requires_grad=True)
    c0 = torch.randn(4, 3, 5, requires_grad=True) if lstm else None
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    torch.manual_seed(4)
    out, hn = m(packed, (h0, c0) if c0 is not None else h0)
    y = pad_packed_sequence(out)[0]
    h, c = hn if c0 is not None else (hn, None)
    m64 = copy.deepcopy(m).double()
    x64, h064 = x.detach().double().requires_grad_(), h0.detach().double().requires_grad_()
    c064 = c0.detach().double().requires_grad_() if c0 is not None else None
    torch.manual_seed(4)
    oy, oh, oc = oracle.module(m64, x64, h064, c064, regs, True, lengths, packed.sorted_indices)
    for what, o, w in (("y", y, oy), ("h_n", h, oh), ("c_n", c, oc)):
        if w is not None:
            assert (o.double() - w).abs().max().item() <= _fp32_bound(w), what
    mine = [x, h0] + ([c0] if c0 is not None else []) + list(m.parameters())
    theirs = [x64, h064] + ([c064] if c064 is not None else []) + list(m64.parameters())
    for i, (g, w) in enumerate(zip(grads((y, h, c), mine), grads((oy, oh, oc), theirs))):
        assert (g.double() - w).abs().max().item() <= _fp32_bound(w), f"gradient {i}"


def test_triton_runs_every_regularised_variant():
    """The kernels take the masks with every cell, reset_after=False and proj_size included, so
    the Triton backend declines none of them (it did: proj_size and reset_after=False fell back)."""
    from fusedrnn.ops import triton
    for cell in GATES:
        assert triton.unsupported(cell, torch.float32, 8, regularised=True) is None, cell
    assert triton.unsupported("lstm", torch.float32, 8, 4, directions=2, regularised=True) is None


def test_regularised_kernels_compile_for_sm90_without_spills():
    """The kernels with every mask flag on compile for the H100 (the interpreter checks the
    math, not what the compiler accepts) at an anchor shape in bf16, without register spills;
    the LSTM by default, torch.nn's four cells in the full run; the compile gate's "D1 zo+rd" rows
    and tests/test_critical_path.py compile them (the reset-before GRU's too) at the anchors, and
    the reset-before GRU's backward at B8·H256 (no anchor: it spilled 24 bytes plain and 8 with
    the masks until its resident piece held r's and z's rows alone, config.resident_bwd_gates)."""
    cells = sorted(TURNS) if full_run() else ["lstm"]
    script = ("import json, sys\nfrom tools.compile_check import triton_rows\nout = []\n"
              f"for cell in {cells!r}:\n"
              "    for d in ('fwd', 'bwd'):\n"
              "        _, lau, res = triton_rows.compile_on_h100(cell, 'bf16', 8, 256, d, regularised=True)\n"
              "        out.append((cell, d, lau.layout, res['spill'], res['tc']))\n"
              "print(json.dumps(out))\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 2 * len(cells)
    assert all(spill == 0 and tc for *_, spill, tc in rows), rows


@pytest.mark.parametrize("make", [lambda **kw: fusedrnn.LSTMCell(4, 5, zoneout_cell=0.3, **kw),
                                  lambda **kw: fusedrnn.RNNCell(4, 5, nonlinearity="relu", **kw)])
def test_triton_cell_matches_the_reference_cell(make):
    """Two training steps of a cell on the kernels and on the reference (itself checked against
    the oracle in test_regularisers.py), the same seed: the same masks, values and gradients."""
    outs = []
    for backend in ("triton", "reference"):
        torch.manual_seed(5)
        c = make(backend=backend, zoneout=0.4, recurrent_dropout=0.5)
        x = [torch.randn(3, 4, requires_grad=True) for _ in range(2)]
        state = h0 = torch.randn(3, 5, requires_grad=True)
        if isinstance(c, torch.nn.LSTMCell):
            state = (h0, torch.randn(3, 5))
        for xi in x:
            state = c(xi, state)
        h = state[0] if isinstance(state, tuple) else state
        outs.append([h, *grads((h,), [*x, h0, *c.parameters()])])
    for got, want in zip(*outs):
        assert (got - want).abs().max().item() <= _fp32_bound(want)
