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
"""
from __future__ import annotations

import math

import pytest
import torch

from fusedrnn.ops import GATES, recurrence, reference

CELLS = tuple(GATES)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FLOOR = {torch.float32: 5e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
ANCHORS = [(1, 1024, 256), (8, 512, 128), (16, 1024, 768), (64, 256, 1024), (256, 128, 512)]  # B, T, H

has_cuda = torch.cuda.is_available()
gpu = pytest.mark.skipif(not has_cuda, reason="no CUDA device")

from sanitizer_case import KNOBS as TIER_KNOBS  # noqa: E402  (tests/gpu is on sys.path under pytest)
from sanitizer_case import TIERS  # noqa: E402  (the env knobs that force each tier, several CTAs and groups)


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
        elif cell == "gru":
            hn, cn = reference.gru_step(gx[t], h, w_hh, b_hh), None
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
    return ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-3)).item()


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
