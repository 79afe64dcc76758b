"""backend="cuda" on a GPU against the float64 reference: values and every gradient, each
tier forced (cta, cluster, grid with and without streamed passes, step), every cell,
fp32/bf16/fp16, lengths and reverse, batch tails (several batch groups), odd H (several
CTAs exchanging h); NaN in padded steps; the AUTO fallback; bitwise reproducibility;
CUDA-graph capture; the plan read off the device. Skipped only where there is no CUDA device.

Every test runs with FUSEDRNN_CUDA_POISON=1 (unwritten outputs are NaN), FUSEDRNN_CUDA_CHECK=1
(each launch is synchronised: a fault or a flag wait that timed out raises at that launch,
naming direction, tier, step and CTAs) and a short spin limit, so a broken exchange fails in
milliseconds instead of hanging the 15-minute window. Test ids name the tier and shape.

Tolerance (docs/design.md): error relative to the float64 reference no worse than twice that of
the same recurrence run by torch in the same dtype (`lowp_recurrence`, every tensor and the
state in that dtype, as torch.nn does), with a small floor per dtype.

backend="cuda", kernel contract v2 (CONTRACT in fusedrnn/ops/fused.py and cuda.py): both
directions in one launch (D = 2) and the LSTM projection (w_hr), each tier forced, against the
float64 reference run direction by direction: values (y, hT, cT) and every gradient (d_gx,
dh0, dc0, dw_hr, and dW_hh/db_hh as the caller computes them from d_gh); then the fused
decode step (`step`) of every cell against float64 torch math, and its CUDA-graph capture.
Skipped only where there is no CUDA device.

Every test runs with FUSEDRNN_CUDA_POISON=1, FUSEDRNN_CUDA_CHECK=1 and a short spin limit (see
test_cuda_gpu.py): an unwritten output is NaN, a broken exchange raises at its launch.
Tolerance: error relative to the float64 reference no worse than twice that of the same
computation by torch in the dtype itself, with the same floor per dtype as test_cuda_gpu.py."""
from __future__ import annotations

import math

import pytest
import torch

from fusedrnn.ops import GATES, recurrence, reference

from fusedrnn.ops.cuda import CUDA_GATES  # noqa: E402
CELLS = tuple(CUDA_GATES)  # the cells the CUDA kernels implement
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FLOOR = {torch.float32: 5e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
ANCHORS = [(1, 1024, 256), (8, 512, 128), (16, 1024, 768), (64, 256, 1024), (256, 128, 512)]  # B, T, H

has_cuda = torch.cuda.is_available()
gpu = pytest.mark.skipif(not has_cuda, reason="no CUDA device")

from sanitizer_case import KNOBS as TIER_KNOBS  # noqa: E402  (tests/gpu is on sys.path under pytest)
from sanitizer_case import TIERS  # noqa: E402  (the env knobs that force each tier, several CTAs and groups)
from fusedrnn.ops import cuda as cuda_ops
from fusedrnn.ops.common import GRU_RESET_BEFORE, recurrent_weight_grads, reset_before_args


@pytest.fixture(autouse=True)
def loud(monkeypatch):
    monkeypatch.setenv("FUSEDRNN_CUDA_POISON", "1")
    monkeypatch.setenv("FUSEDRNN_CUDA_CHECK", "1")
    monkeypatch.setenv("FUSEDRNN_CUDA_SPIN_LIMIT", str(1 << 27))  # ~70 ms at 1.9 GHz
    for k in TIER_KNOBS:
        monkeypatch.delenv(k, raising=False)


def use_tier(monkeypatch, tier):
    for k, v in TIERS[tier].items():
        monkeypatch.setenv(k, v)


def make_case(cell, T, B, H, dtype, device, lengths, seed=0):
    """Inputs rounded to `dtype` once; the reference gets those same values in float64."""
    g = torch.Generator().manual_seed(seed)
    G, k = GATES[cell], 1.0 / math.sqrt(H)
    x = dict(gx=torch.randn(T, B, G * H, generator=g, dtype=torch.float64) * 0.7,
             h0=torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5,
             c0=torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5 if cell == "lstm" else None,
             w_hh=(torch.rand(G * H, H, generator=g, dtype=torch.float64) * 2 - 1) * k,
             b_hh=(torch.rand(G * H, generator=g, dtype=torch.float64) * 2 - 1) * k)
    x = {n: (t.to(dtype).to(device) if t is not None else None) for n, t in x.items()}
    lens = draw_lengths(T, B, g).to(device) if lengths else None
    # fixed cotangents for y, hT, cT
    probes = [torch.randn(T, B, H, generator=g, dtype=torch.float64).to(device),
              torch.randn(B, H, generator=g, dtype=torch.float64).to(device),
              torch.randn(B, H, generator=g, dtype=torch.float64).to(device)]
    return x, lens, probes


def draw_lengths(T, B, g):
    """(B,) int64 lengths in 1..T: the first row runs all T steps, the last (B > 1) one."""
    lens = torch.randint(1, T + 1, (B,), generator=g)
    lens[0] = T
    if B > 1:
        lens[-1] = 1
    return lens


def lowp_recurrence(cell, gx, h0, c0, w_hh, b_hh, lengths=None, reverse=False, w_hr=None):
    """The recurrence entirely in the inputs' dtype (state included): torch.nn's precision.
    w_hr: the LSTM projection (P, H) or None."""
    T = gx.shape[0]
    h, c, ys = h0, c0, [None] * T
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        if cell == "lstm":
            hn, cn = reference.lstm_step(gx[t], h, c, w_hh, b_hh, w_hr)
        elif cell in ("gru", GRU_RESET_BEFORE):
            hn, cn = reference.gru_step(gx[t], h, w_hh, b_hh, reset_after=cell == "gru"), None
        else:
            hn, cn = reference.rnn_step(gx[t], h, w_hh, b_hh, relu=cell == "rnn_relu"), None
        if lengths is None:
            h, c, ys[t] = hn, cn, hn
        else:
            m = (t < lengths.to(gx.device)).unsqueeze(1)
            h = torch.where(m, hn, h)
            c = torch.where(m, cn, c) if cn is not None else None
            ys[t] = torch.where(m, hn, torch.zeros_like(hn))
    y = torch.stack(ys)
    return (y, h, c) if cell == "lstm" else (y, h)


def run(fn, cell, x, lens, probes, reverse, dtype):
    """Outputs and the gradients of every input for a fixed linear loss, all as float64."""
    leaves = {n: (t.detach().to(dtype).requires_grad_(True) if t is not None else None) for n, t in x.items()}
    outs = fn(cell, leaves["gx"], leaves["h0"], leaves["c0"], leaves["w_hh"], leaves["b_hh"], lens, reverse)
    loss = sum((o.double() * p).sum() for o, p in zip(outs, probes))
    loss.backward()
    grads = [leaves[n].grad for n in ("gx", "h0", "c0", "w_hh", "b_hh") if leaves[n] is not None]
    return [o.detach().double() for o in outs], [g.double() for g in grads]


def backend_fn(name):
    return lambda cell, gx, h0, c0, w, b, lens, rev: recurrence(cell, gx, h0, c0, w, b, lens, rev, backend=name)


def rel_err(a, ref):
    return ((a.cpu() - ref.cpu()).abs().max() / ref.abs().max().clamp_min(1e-3)).item()


NAMES = ["y", "hT", "cT"], ["d_gx", "d_h0", "d_c0", "d_w_hh", "d_b_hh"]


def check(cell, T, B, H, dtype, device, lengths, reverse, backend="cuda", seed=0, got_fn=None, label=""):
    x, lens, probes = make_case(cell, T, B, H, dtype, device, lengths, seed)
    ref_o, ref_g = run(backend_fn("reference"), cell, x, lens, probes, reverse, torch.float64)
    got_o, got_g = run(got_fn or backend_fn(backend), cell, x, lens, probes, reverse, dtype)
    base_o, base_g = run(lowp_recurrence, cell, x, lens, probes, reverse, dtype)
    gnames = [n for n in NAMES[1] if not (n == "d_c0" and cell != "lstm")]
    failures = []
    for names, got, base, ref in ((NAMES[0], got_o, base_o, ref_o), (gnames, got_g, base_g, ref_g)):
        for name, a, b, r in zip(names, got, base, ref):
            if not torch.isfinite(a).all():
                bad = (~torch.isfinite(a)).nonzero()[:4].tolist()
                failures.append(f"{name}: non-finite at {bad} (unwritten output?)")
                continue
            tol = max(2 * rel_err(b, r), FLOOR[dtype])
            e = rel_err(a, r)
            if not e <= tol:
                at = (a - r).abs().flatten().argmax().item()
                failures.append(f"{name}: error {e:.3g} > tol {tol:.3g} (torch in {dtype}: {rel_err(b, r):.3g}; "
                                f"worst at flat index {at} of shape {tuple(a.shape)})")
    assert not failures, (f"[{label}] {cell} T={T} B={B} H={H} {dtype} lengths={lengths} reverse={reverse}: "
                          + "; ".join(failures))


# --- every tier, forced ----------------------------------------------------------------

SHAPES = [(1, 3, 5), (7, 3, 33), (5, 37, 40)]  # T, B, H: one step; 3 CTAs of 16 units; 5 groups of 8 rows


@gpu
@pytest.mark.parametrize("T, B, H", SHAPES, ids=[f"T{t}_B{b}_H{h}" for t, b, h in SHAPES])
@pytest.mark.parametrize("lengths, reverse", [(False, False), (True, True)], ids=["full", "lengths_rev"])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tier", ["cta", "cluster", "grid", "grid-passes", "step"])
def test_tier(tier, cell, dtype, lengths, reverse, T, B, H, monkeypatch):
    use_tier(monkeypatch, tier)
    check(cell, T, B, H, dtype, torch.device("cuda"), lengths, reverse, label=f"tier {tier}")


@gpu
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B, T, H", ANCHORS, ids=[f"anchor_B{b}_H{h}" for b, t, h in ANCHORS])
def test_anchor_shapes_auto(cell, dtype, B, T, H):
    """The tier the plan picks at each anchor (B, H); T shortened: the plan does not depend on it."""
    from fusedrnn.ops import cuda as cuda_ops
    tiers = [cuda_ops.plan(cell, dtype, B, H, backward=b)["tier"] for b in (False, True)]
    check(cell, min(T, 12), B, H, dtype, torch.device("cuda"), lengths=True, reverse=False,
          label=f"auto fwd {tiers[0]} / bwd {tiers[1]}")


@gpu
def test_long_sequence_accumulates_no_drift():
    check("lstm", 1024, 1, 256, torch.bfloat16, torch.device("cuda"), lengths=False, reverse=False, label="auto T1024")


# --- lengths: padded steps contribute nothing ----------------------------------------------

@gpu
@pytest.mark.parametrize("tier", ["cta", "cluster", "grid", "step"])
@pytest.mark.parametrize("cell", CELLS)
def test_nan_in_padded_steps_changes_nothing(cell, tier, monkeypatch):
    """NaN/inf in gx at t >= lengths[b] is never read: outputs and every gradient are bitwise
    those of clean inputs; NaN in one sequence's h0/c0 leaves the other sequences untouched."""
    use_tier(monkeypatch, tier)
    T, B, H, dt = 6, 5, 33, torch.bfloat16
    x, lens, probes = make_case(cell, T, B, H, dt, torch.device("cuda"), lengths=True, seed=3)
    for reverse in (False, True):
        clean = run(backend_fn("cuda"), cell, x, lens, probes, reverse, dt)
        dirty = dict(x)
        pad = (torch.arange(T, device="cuda")[:, None] >= lens[None, :])  # (T, B)
        gx = x["gx"].clone()
        gx[pad] = float("nan")
        gx[pad.nonzero()[:1, 0], pad.nonzero()[:1, 1]] = float("inf")
        dirty["gx"] = gx
        got = run(backend_fn("cuda"), cell, dirty, lens, probes, reverse, dt)
        for a, b in zip(clean[0] + clean[1][1:], got[0] + got[1][1:]):  # all but d_gx of the poisoned input
            assert torch.equal(a, b), f"tier {tier} reverse={reverse}: padded NaN leaked"
        assert torch.equal(clean[1][0], got[1][0])  # d_gx: padded steps get exactly 0
        assert (got[1][0][pad] == 0).all()
        short = int(torch.argmin(lens))
        h0 = x["h0"].clone()
        h0[short] = float("nan")
        nanh = run(backend_fn("cuda"), cell, dict(x, h0=h0), lens, probes, reverse, dt)[0]
        keep = [b for b in range(B) if b != short]
        for a, b in zip(clean[0], nanh):
            dim = 1 if a.dim() == 3 else 0
            assert torch.equal(a.index_select(dim, torch.tensor(keep, device="cuda")),
                               b.index_select(dim, torch.tensor(keep, device="cuda"))), f"tier {tier}: NaN h0 leaked"


# --- launch behaviour --------------------------------------------------------------------------

@gpu
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_a_flag_wait_that_times_out_is_reported(direction, monkeypatch):
    """Spin limit of one cycle: among 3 CTAs over 200 steps some wait finds a flag not yet
    released (in practice always), and the launch raises naming the step and the CTAs."""
    use_tier(monkeypatch, "grid")
    x, lens, probes = make_case("gru", 200, 3, 33, torch.bfloat16, torch.device("cuda"), lengths=False)
    pattern = (rf"{direction} persistent kernel \(grid tier\) timed out: CTA \d+ waited at step \d+ "
               r"for the h chunk of CTA \d+")
    if direction == "backward":  # a clean forward first: only the backward may time out
        leaves = {n: (t.detach().requires_grad_(True) if t is not None else None) for n, t in x.items()}
        outs = recurrence("gru", leaves["gx"], leaves["h0"], None, leaves["w_hh"], leaves["b_hh"], None, False,
                          backend="cuda")
        monkeypatch.setenv("FUSEDRNN_CUDA_SPIN_LIMIT", "1")
        with pytest.raises(RuntimeError, match=pattern):
            outs[0].float().sum().backward()
    else:
        monkeypatch.setenv("FUSEDRNN_CUDA_SPIN_LIMIT", "1")
        with pytest.raises(RuntimeError, match=pattern):
            run(backend_fn("cuda"), "gru", x, lens, probes, False, torch.bfloat16)

@gpu
@pytest.mark.parametrize("tier", ["cta", "cluster", "grid", "step"])
@pytest.mark.parametrize("cell", CELLS)
def test_repeated_runs_are_bitwise_identical(cell, tier, monkeypatch):
    use_tier(monkeypatch, tier)
    x, lens, probes = make_case(cell, 9, 37, 40, torch.bfloat16, torch.device("cuda"), lengths=True)
    first = run(backend_fn("cuda"), cell, x, lens, probes, True, torch.bfloat16)
    for _ in range(2):
        again = run(backend_fn("cuda"), cell, x, lens, probes, True, torch.bfloat16)
        for a, b in zip(first[0] + first[1], again[0] + again[1]):
            assert torch.equal(a, b), f"tier {tier}: not reproducible"


@gpu
@pytest.mark.parametrize("tier", ["cta", "cluster", "grid", "step"])
def test_cuda_graph_capture(tier, monkeypatch):
    """No allocation or synchronisation inside the extension: capture and replay a forward."""
    use_tier(monkeypatch, tier)
    monkeypatch.delenv("FUSEDRNN_CUDA_CHECK")  # it synchronises, which a capture forbids
    for cell in CELLS:
        x, lens, _ = make_case(cell, 16, 8, 64, torch.bfloat16, torch.device("cuda"), lengths=True)
        args = (cell, x["gx"], x["h0"], x["c0"], x["w_hh"], x["b_hh"], lens, False)
        with torch.no_grad():
            eager = backend_fn("cuda")(*args)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                backend_fn("cuda")(*args)  # warm-up outside the capture
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                captured = backend_fn("cuda")(*args)
            graph.replay()
            torch.cuda.synchronize()
        for a, b in zip(eager, captured):
            assert torch.equal(a, b), f"tier {tier} {cell}: replay differs"


@gpu
def test_plan_on_this_device_is_the_pure_plan_of_its_limits():
    from fusedrnn import _C
    from fusedrnn.ops import cuda as cuda_ops
    limits = _C.device_limits(torch.cuda.current_device())
    props = torch.cuda.get_device_properties(0)
    assert limits["sms"] == props.multi_processor_count
    for cell in CELLS:
        for dtype in DTYPES.values():
            for B, T, H in ANCHORS:
                for bwd in (False, True):
                    on_device = cuda_ops.plan(cell, dtype, B, H, backward=bwd)
                    assert on_device == cuda_ops.plan_for(cell, dtype, B, H, limits, backward=bwd)
                    if limits == cuda_ops.H100_LIMITS and dtype != torch.float32:
                        assert on_device["persistent"], (cell, dtype, B, H, bwd, on_device["reason"])


@gpu
def test_step_fallback_covers_sizes_too_large_for_the_persistent_kernel(monkeypatch):
    from fusedrnn.ops import cuda as cuda_ops
    p = cuda_ops.plan("lstm", torch.float32, 4, 4096)
    assert not p["persistent"] and p["reason"]
    check("lstm", 3, 4, 4096, torch.float32, torch.device("cuda"), lengths=True, reverse=False, label="auto step")
    gx = torch.randn(2, 4, 4 * 4096, device="cuda")
    h = torch.zeros(4, 4096, device="cuda")
    monkeypatch.setenv("FUSEDRNN_CUDA_MODE", "grid")
    with pytest.raises(RuntimeError, match="the grid mode cannot run"):
        cuda_ops.forward("lstm", gx, h, h, torch.zeros(4 * 4096, 4096, device="cuda"), None, None, False, False)


@gpu
def test_cuda_tensors_on_cpu_are_refused():
    from fusedrnn.ops import cuda as cuda_ops
    gx = torch.randn(2, 3, 8)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        cuda_ops.forward("rnn_tanh", gx, torch.zeros(3, 8), None, torch.zeros(8, 8), None, None, False, False)


# --- the harness itself, on the CPU (reference backend in place of cuda) ---------------

@pytest.mark.parametrize("cell", CELLS)
def test_harness_accepts_the_reference_and_rejects_a_wrong_answer(cell):
    cpu = torch.device("cpu")
    check(cell, 4, 3, 5, torch.float32, cpu, lengths=True, reverse=True, backend="reference")
    check(cell, 4, 3, 5, torch.bfloat16, cpu, lengths=False, reverse=False, backend="reference")

    def off_by(factor):
        def fn(*a):
            outs = backend_fn("reference")(*a)
            return (outs[0] * factor,) + tuple(outs[1:])
        return fn

    with pytest.raises(AssertionError, match="y: error"):
        check(cell, 4, 3, 5, torch.float32, cpu, lengths=True, reverse=True, got_fn=off_by(1.001))
    with pytest.raises(AssertionError, match="y: error"):
        check(cell, 4, 3, 5, torch.bfloat16, cpu, lengths=False, reverse=False, got_fn=off_by(1.05))


def test_every_tier_has_knobs():
    from fusedrnn.ops import cuda as cuda_ops
    assert {v["FUSEDRNN_CUDA_MODE"] for v in TIERS.values()} == set(cuda_ops.MODES) - {"persistent"}


def make_v2_case(cell, T, B, H, P, D, lengths, seed=0):
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
    # as the caller does (the reset-before GRU's n rows pair d_gh with r ⊙ h_{t-1})
    grads["w_hh"], grads["b_hh"] = recurrent_weight_grads(
        d_gh, y, a["h0"], lens32, False, True, dtype, **reset_before_args(cell, a["gx"], a["w_hh"], a["b_hh"]))
    outs = tuple(o.double() if o is not None else None for o in (y, hT, cT))
    return outs, {n: g.double() for n, g in grads.items() if g is not None}


def check_v2(cell, T, B, H, P, D, dtype, lengths, label, seed=0):
    x, lens, probes = make_v2_case(cell, T, B, H, P, D, lengths, seed)
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
    x, lens, probes = make_v2_case("lstm", T, B, H, P, D, lengths=True, seed=3)
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
    x, lens, _ = make_v2_case("lstm", 8, 8, 40, 24, 2, lengths=True)
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
