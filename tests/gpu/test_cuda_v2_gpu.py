"""backend="cuda", kernel contract v2 (docs/design.md, "The kernel contract"): both
directions in one launch (D = 2) and the LSTM projection (w_hr), each tier forced, against the
float64 reference run direction by direction: values (y, hT, cT) and every gradient (d_gx,
dh0, dc0, dw_hr, and dW_hh/db_hh as the caller computes them from d_gh); then the fused
decode step (`step`) of every cell against float64 torch math, and its CUDA-graph capture.
Skipped only where there is no CUDA device.

Every test runs with FUSEDRNN_CUDA_POISON=1, FUSEDRNN_CUDA_CHECK=1 and a short spin limit (see
test_cuda_gpu.py): an unwritten output is NaN, a broken exchange raises at its launch.
Tolerance: error relative to the float64 reference no worse than twice that of the same
computation by torch in the dtype itself, with the same floor per dtype as test_cuda_gpu.py.
"""
from __future__ import annotations

import math

import pytest
import torch

from fusedrnn.ops import GATES, reference
from fusedrnn.ops import cuda as cuda_ops
from fusedrnn.ops.common import prev_states, weight_grads

# the same loud fixture (poison, check, short spin limit), tier knobs and tolerance floors
from sanitizer_case import TIERS  # noqa: E402  (tests/gpu is on sys.path under pytest)
from test_cuda_gpu import CELLS, DTYPES, FLOOR, draw_lengths, gpu, loud, lowp_recurrence, use_tier  # noqa: E402,F401


def make_case(cell, T, B, H, P, D, lengths, seed=0):
    """float64 inputs of the v2 contract (leading D only when D = 2), lengths and cotangents."""
    g = torch.Generator().manual_seed(seed)
    G, k = GATES[cell], 1.0 / math.sqrt(H)
    lead = (D,) if D > 1 else ()
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    uni = lambda *s: (torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1) * k  # noqa: E731
    x = dict(gx=rnd(T, B, D * G * H) * 0.7, h0=rnd(*lead, B, P) * 0.5,
             c0=rnd(*lead, B, H) * 0.5 if cell == "lstm" else None,
             w_hh=uni(*lead, G * H, P), b_hh=uni(*lead, G * H),
             w_hr=uni(*lead, P, H) if P != H else None)
    lens = draw_lengths(T, B, g) if lengths else None
    probes = dict(y=rnd(T, B, D * P), hT=rnd(*lead, B, P), cT=rnd(*lead, B, H))
    return x, lens, probes


def per_direction(t, d, D):
    return t[d] if D > 1 else t


def run_reference(cell, x, lens, D, step=None):
    """Per direction through `step` (reference.recurrence in float64 by default); outputs in the
    v2 layout and the gradients of the probes' linear loss as a dict, all float64."""
    G = GATES[cell]
    step = step or (lambda *a, **kw: reference.recurrence(*a, **kw))
    leaves = {n: (t.clone().requires_grad_(True) if t is not None else None) for n, t in x.items()}
    H = leaves["gx"].shape[2] // (D * G)
    ys, hs, cs = [], [], []
    for d in range(D):
        pick = lambda n: per_direction(leaves[n], d, D) if leaves[n] is not None else None  # noqa: E731
        outs = step(cell, leaves["gx"][:, :, d * G * H:(d + 1) * G * H], pick("h0"), pick("c0"), pick("w_hh"),
                    pick("b_hh"), lengths=lens, reverse=d == 1, w_hr=pick("w_hr"))
        ys.append(outs[0])
        hs.append(outs[1])
        cs.append(outs[2] if cell == "lstm" else None)
    y = torch.cat(ys, dim=2)
    hT = torch.stack(hs) if D > 1 else hs[0]
    cT = (torch.stack(cs) if D > 1 else cs[0]) if cell == "lstm" else None
    return leaves, (y, hT, cT)


def grads_of(leaves, outs, probes, names):
    loss = sum((o.double() * probes[n]).sum() for n, o in zip(("y", "hT", "cT"), outs) if o is not None)
    loss.backward()
    return {n: leaves[n].grad.double() for n in names if leaves[n] is not None}


def run_cuda(cell, x, lens, probes, D, dtype):
    """The cuda backend's forward and backward called as the v2 contract says; the weight
    gradients of W_hh/b_hh computed from d_gh the way the caller does (fusedrnn/ops/common.py)."""
    dev = torch.device("cuda")
    a = {n: (t.to(dev, dtype).contiguous() if t is not None else None) for n, t in x.items()}
    lens32 = lens.to(dev, torch.int32) if lens is not None else None
    G, P = GATES[cell], a["h0"].shape[-1]
    H = a["gx"].shape[2] // (D * G)
    y, hT, cT, saved = cuda_ops.forward(cell, a["gx"], a["h0"], a["c0"], a["w_hh"], a["b_hh"], lens32, False, True,
                                        a["w_hr"])
    y_nograd, hT_nograd, cT_nograd, none = cuda_ops.forward(cell, a["gx"], a["h0"], a["c0"], a["w_hh"], a["b_hh"],
                                                            lens32, False, False, a["w_hr"])
    assert none == () and torch.equal(y, y_nograd) and torch.equal(hT, hT_nograd), "need_grad changed the outputs"
    if cell == "lstm":
        assert torch.equal(cT, cT_nograd)
    dy, dhT = probes["y"].to(dev, dtype), probes["hT"].to(dev, dtype)
    dcT = probes["cT"].to(dev, dtype) if cell == "lstm" else None
    res = cuda_ops.backward(cell, dy, dhT, dcT, a["gx"], a["h0"], a["c0"], a["w_hh"], a["b_hh"], lens32, False,
                            y.clone(), saved, a["w_hr"])
    d_gx, d_gh, dh0, dc0 = res[:4]
    grads = {"gx": d_gx, "h0": dh0, "c0": dc0}
    if a["w_hr"] is not None:
        assert len(res) == 5
        grads["w_hr"] = res[4]
    dws, dbs = [], []
    for d in range(D):
        h_prev = prev_states(y[:, :, d * P:(d + 1) * P], per_direction(a["h0"], d, D), lens32, d == 1)
        dw, db = weight_grads(d_gh[:, :, d * G * H:(d + 1) * G * H], h_prev, True, dtype)
        dws.append(dw)
        dbs.append(db)
    grads["w_hh"] = torch.stack(dws) if D > 1 else dws[0]
    grads["b_hh"] = torch.stack(dbs) if D > 1 else dbs[0]
    outs = tuple(o.double() if o is not None else None for o in (y, hT, cT))
    return outs, {n: g.double() for n, g in grads.items() if g is not None}


def rel_err(a, ref):
    return ((a.cpu() - ref.cpu()).abs().max() / ref.abs().max().clamp_min(1e-3)).item()


def check_v2(cell, T, B, H, P, D, dtype, lengths, label, seed=0):
    x, lens, probes = make_case(cell, T, B, H, P, D, lengths, seed)
    names = [n for n in ("gx", "h0", "c0", "w_hh", "b_hh", "w_hr") if x[n] is not None]
    leaves, ref_o = run_reference(cell, x, lens, D)
    ref_g = grads_of(leaves, ref_o, probes, names)
    xl = {n: (t.to(dtype) if t is not None else None) for n, t in x.items()}
    leaves, base_o = run_reference(cell, xl, lens, D, lowp_recurrence)
    base_g = grads_of(leaves, base_o, {n: p.to(dtype) for n, p in probes.items()}, names)
    got_o, got_g = run_cuda(cell, x, lens, {n: p for n, p in probes.items()}, D, dtype)
    failures = []
    pairs = [(f"{n}", got_o[i], base_o[i], ref_o[i]) for i, n in enumerate(("y", "hT", "cT")) if ref_o[i] is not None]
    pairs += [(f"d_{n}", got_g[n], base_g[n], ref_g[n]) for n in names]
    for name, a, b, r in pairs:
        r = r.detach()
        if not torch.isfinite(a).all():
            failures.append(f"{name}: non-finite at {(~torch.isfinite(a)).nonzero()[:4].tolist()} (unwritten output?)")
            continue
        tol = max(2 * rel_err(b.detach().double(), r), FLOOR[dtype])
        e = rel_err(a, r)
        if not e <= tol:
            at = (a.cpu() - r.cpu()).abs().flatten().argmax().item()
            failures.append(f"{name}: error {e:.3g} > tol {tol:.3g} (worst at flat index {at} of {tuple(a.shape)})")
    assert not failures, (f"[{label}] {cell} T={T} B={B} H={H} P={P} D={D} {dtype} lengths={lengths}: "
                          + "; ".join(failures))


# --- both directions in one launch, every cell and tier -------------------------------

SHAPES_D2 = [(1, 3, 5), (7, 3, 33), (5, 37, 40)]  # T, B, H: one step; 3 CTAs of 16 units; 5 groups of 8 rows


@gpu
@pytest.mark.parametrize("T, B, H", SHAPES_D2, ids=[f"T{t}_B{b}_H{h}" for t, b, h in SHAPES_D2])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tier", ["cta", "cluster", "grid", "grid-passes", "step"])
def test_two_directions_in_one_launch(tier, cell, dtype, T, B, H, monkeypatch):
    use_tier(monkeypatch, tier)
    p = cuda_ops.plan(cell, dtype, B, H, directions=2)
    assert p["tier"] == TIERS[tier]["FUSEDRNN_CUDA_MODE"], p
    if p["persistent"]:
        assert p["grid"] == 2 * p["layout"]["NU"] * p["layout"]["NBG"], p  # one CTA group per direction
    check_v2(cell, T, B, H, H, 2, dtype, True, f"D2 tier {tier}")


# --- the LSTM projection, one and two directions, every tier ----------------------------

# T, B, H, P: a CTA without P-units (P=7 over 3 CTAs of 16 units); 5 batch groups; P-units a
# k-step multiple per CTA (16 of 45 over 3 CTAs: the only way the forward's first stage, which
# consumes h in P-unit chunks, can stream in passes, so the grid-passes tier takes only that one)
SHAPES_PROJ = [(1, 3, 5, 3), (7, 3, 33, 7), (5, 37, 40, 24), (6, 19, 48, 45)]
TIERS_PROJ = [(tier, shape) for tier in ("cta", "cluster", "grid", "step") for shape in SHAPES_PROJ] + \
    [("grid-passes", SHAPES_PROJ[-1])]


@gpu
@pytest.mark.parametrize("tier, shape", TIERS_PROJ, ids=[f"{t}-T{s[0]}_B{s[1]}_H{s[2]}_P{s[3]}" for t, s in TIERS_PROJ])
@pytest.mark.parametrize("D", [1, 2], ids=["D1", "D2"])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_projection(tier, shape, dtype, D, monkeypatch):
    use_tier(monkeypatch, tier)
    T, B, H, P = shape
    for bwd in (False, True):
        p = cuda_ops.plan("lstm", dtype, B, H, backward=bwd, proj_size=P, directions=D)
        assert p["tier"] == TIERS[tier]["FUSEDRNN_CUDA_MODE"], p
        assert p["tier"] == "step" or p["layout"]["nst"] == 2, p
        if tier == "grid-passes":
            assert p["layout"]["stages"][0]["NP"] == 2, p
    check_v2("lstm", T, B, H, P, D, dtype, lengths=True, label=f"proj tier {tier}")


@gpu
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("B, H, P, D", [(16, 1024, 256, 1), (32, 512, 128, 2), (4, 768, 256, 2)])
def test_projection_and_directions_at_model_sizes_auto(dtype, B, H, P, D):
    """The tier the plan picks (T shortened: the plan does not depend on it)."""
    check_v2("lstm", 9, B, H, P, D, dtype, lengths=True, label="auto")


@gpu
@pytest.mark.parametrize("lengths", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("cell", CELLS)
def test_encoder_layer_both_directions_auto(cell, lengths):
    """The bidirectional encoder's layer shape (B32·H512), fp16, on the tier the plan picks."""
    check_v2(cell, 16, 32, 512, 512, 2, torch.float16, lengths=lengths, label="encoder")


@gpu
@pytest.mark.parametrize("tier", ["cta", "cluster", "grid", "step"])
def test_v2_nan_in_padded_steps_changes_nothing(tier, monkeypatch):
    """NaN in gx at padded steps, both directions and a projection: bitwise the clean results."""
    use_tier(monkeypatch, tier)
    T, B, H, P, D = 6, 5, 33, 7, 2
    x, lens, probes = make_case("lstm", T, B, H, P, D, lengths=True, seed=3)
    clean = run_cuda("lstm", x, lens, probes, D, torch.bfloat16)
    pad = torch.arange(T)[:, None] >= lens[None, :]
    dirty = dict(x, gx=x["gx"].clone())
    dirty["gx"][pad] = float("nan")
    got = run_cuda("lstm", dirty, lens, probes, D, torch.bfloat16)
    for a, b in zip(clean[0], got[0]):
        assert torch.equal(a, b), f"tier {tier}: padded NaN leaked into the outputs"
    for n in clean[1]:
        assert torch.equal(clean[1][n], got[1][n]), f"tier {tier}: padded NaN leaked into d_{n}"


@gpu
@pytest.mark.parametrize("tier", ["cta", "cluster", "grid", "step"])
def test_v2_graph_capture_and_reproducibility(tier, monkeypatch):
    use_tier(monkeypatch, tier)
    monkeypatch.delenv("FUSEDRNN_CUDA_CHECK")  # it synchronises, which a capture forbids
    x, lens, _ = make_case("lstm", 8, 8, 40, 24, 2, lengths=True)
    a = {n: t.to("cuda", torch.bfloat16) for n, t in x.items()}
    lens32 = lens.to("cuda", torch.int32)
    call = lambda: cuda_ops.forward("lstm", a["gx"], a["h0"], a["c0"], a["w_hh"], a["b_hh"], lens32,  # noqa: E731
                                    False, False, a["w_hr"])[:3]
    eager = call()
    assert all(torch.equal(u, v) for u, v in zip(eager, call())), f"tier {tier}: not reproducible"
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        call()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = call()
    graph.replay()
    torch.cuda.synchronize()
    assert all(torch.equal(u, v) for u, v in zip(eager, captured)), f"tier {tier}: replay differs"


# --- the fused decode step ---------------------------------------------------------------

def step_reference(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """torch math of one cell step (torch.nn's cells), in the inputs' dtype."""
    gx = x @ w_ih.t() + (b_ih if b_ih is not None else 0)
    if cell == "lstm":
        return reference.lstm_step(gx, h0, c0, w_hh, b_hh)
    if cell == "gru":
        return reference.gru_step(gx, h0, w_hh, b_hh), None
    return reference.rnn_step(gx, h0, w_hh, b_hh, relu=cell == "rnn_relu"), None


def make_step(cell, B, I, H, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    G, k = GATES[cell], 1.0 / math.sqrt(H)
    uni = lambda *s: (torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1) * k  # noqa: E731
    return dict(x=torch.randn(B, I, generator=g, dtype=torch.float64),
                h0=torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5,
                c0=torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5 if cell == "lstm" else None,
                w_ih=uni(G * H, I), w_hh=uni(G * H, H), b_ih=uni(G * H) if bias else None,
                b_hh=uni(G * H) if bias else None)


# (B, I, H): the decoder's sizes (vector loads, one row and eight rows per CTA), odd sizes (the
# scalar path), more rows than a CTA takes (grid.y > 1), I != H
STEP_SHAPES = [(1, 1024, 1024), (8, 512, 512), (3, 33, 37), (11, 64, 40), (1, 256, 768)]


@gpu
@pytest.mark.parametrize("B, I, H", STEP_SHAPES, ids=[f"B{b}_I{i}_H{h}" for b, i, h in STEP_SHAPES])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("cell", CELLS)
def test_fused_step(cell, dtype, bias, B, I, H):
    x = make_step(cell, B, I, H, bias)
    ref = step_reference(cell, **x)
    base = step_reference(cell, **{n: (t.to(dtype) if t is not None else None) for n, t in x.items()})
    dev = {n: (t.to("cuda", dtype) if t is not None else None) for n, t in x.items()}
    got = cuda_ops.step(cell, dev["x"], dev["h0"], dev["c0"], dev["w_ih"], dev["w_hh"], dev["b_ih"], dev["b_hh"])
    assert (got[1] is None) == (cell != "lstm")
    for name, a, b, r in zip(("h", "c"), got, base, ref):
        if r is None:
            continue
        assert a.shape == r.shape and a.dtype == dtype and a.is_contiguous()
        assert torch.isfinite(a).all(), f"{name}: non-finite (an unwritten element?)"
        tol = max(2 * rel_err(b.double(), r), FLOOR[dtype])
        e = rel_err(a.double(), r)
        assert e <= tol, f"{cell} {dtype} B{B} I{I} H{H} {name}: error {e:.3g} > tol {tol:.3g}"


@gpu
def test_fused_step_matches_the_recurrence_at_T1():
    """The decode step and the recurrence kernel at T=1 compute the same step (fp32)."""
    for cell in CELLS:
        x = {n: (t.to("cuda", torch.float32) if t is not None else None)
             for n, t in make_step(cell, 3, 48, 40, True).items()}
        h, c = cuda_ops.step(cell, x["x"], x["h0"], x["c0"], x["w_ih"], x["w_hh"], x["b_ih"], x["b_hh"])
        gx = (x["x"] @ x["w_ih"].t() + x["b_ih"]).unsqueeze(0)
        y, hT, cT, _ = cuda_ops.forward(cell, gx, x["h0"], x["c0"], x["w_hh"], x["b_hh"], None, False, False)
        torch.testing.assert_close(h, hT, rtol=2e-5, atol=2e-6)
        if cell == "lstm":
            torch.testing.assert_close(c, cT, rtol=2e-5, atol=2e-6)


@gpu
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_fused_step_two_layer_decode_captured_in_a_graph(dtype):
    """A 2-layer LSTM decode step (state carried) captured once and replayed: the same as eager."""
    B, H, steps = 1, 1024, 4
    layers = [make_step("lstm", B, H, H, True, seed=s) for s in (1, 2)]
    W = [{n: t.to("cuda", dtype) for n, t in layer.items() if n.startswith(("w_", "b_"))} for layer in layers]
    xs = torch.randn(steps, B, H, dtype=torch.float64).to("cuda", dtype)
    h0 = [layer["h0"].to("cuda", dtype) for layer in layers]
    c0 = [layer["c0"].to("cuda", dtype) for layer in layers]

    def decode_step(x, hs, cs):
        out_h, out_c = [], []
        for i in range(2):
            h, c = cuda_ops.step("lstm", x, hs[i], cs[i], W[i]["w_ih"], W[i]["w_hh"], W[i]["b_ih"], W[i]["b_hh"])
            out_h.append(h)
            out_c.append(c)
            x = h
        return out_h, out_c

    hs, cs, eager = list(h0), list(c0), []
    for t in range(steps):
        hs, cs = decode_step(xs[t], hs, cs)
        eager.append(hs[1].clone())
    x_in, h_in, c_in = xs[0].clone(), [h.clone() for h in h0], [c.clone() for c in c0]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        decode_step(x_in, h_in, c_in)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        g_h, g_c = decode_step(x_in, h_in, c_in)
    for i in range(2):
        h_in[i].copy_(h0[i])
        c_in[i].copy_(c0[i])
    for t in range(steps):
        x_in.copy_(xs[t])
        graph.replay()
        for i in range(2):
            h_in[i].copy_(g_h[i])
            c_in[i].copy_(g_c[i])
        torch.cuda.synchronize()
        assert torch.equal(g_h[1], eager[t]), f"{dtype}: replay of step {t} differs from eager"


@gpu
def test_fused_step_rejects_bad_arguments():
    x = {n: (t.to("cuda") if t is not None else None) for n, t in make_step("lstm", 2, 8, 4, True).items()}
    args = lambda **kw: {**{n: t.float() if t is not None else None for n, t in x.items()}, **kw}  # noqa: E731
    with pytest.raises(ValueError, match=r"w_hh must have shape \(16, 4\)"):
        cuda_ops.step("lstm", **args(w_hh=torch.zeros(16, 5, device="cuda")))
    with pytest.raises(TypeError, match="h0 has dtype torch.float16"):
        cuda_ops.step("lstm", **args(h0=x["h0"].half()))
    with pytest.raises(ValueError, match="c0 must be None for cell 'gru'"):
        a = args()
        a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"] = (t[:12] for t in (a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]))
        cuda_ops.step("gru", **a)
