"""backend="cuda" on a GPU against the float64 reference: values and every gradient,
all cells × fp32/bf16/fp16 × with/without lengths × both directions × both kernel
families (persistent, per-step), small awkward sizes and the anchor shapes; bitwise
reproducibility; CUDA-graph capture. Skipped only where there is no CUDA device.

Tolerance (DESIGN.md): error relative to the float64 reference no worse than twice that
of the same recurrence run by torch in the same dtype (`lowp_recurrence`, every tensor
and the state in that dtype, as torch.nn does), with a small floor per dtype.
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
    lens = None
    if lengths:
        lens = torch.randint(1, T + 1, (B,), generator=g)
        lens[0] = T
        lens = lens.to(device)
    # fixed cotangents for y, hT, cT
    probes = [torch.randn(T, B, H, generator=g, dtype=torch.float64).to(device),
              torch.randn(B, H, generator=g, dtype=torch.float64).to(device),
              torch.randn(B, H, generator=g, dtype=torch.float64).to(device)]
    return x, lens, probes


def lowp_recurrence(cell, gx, h0, c0, w_hh, b_hh, lengths=None, reverse=False):
    """The recurrence entirely in the inputs' dtype (state included): torch.nn's precision."""
    T = gx.shape[0]
    h, c, ys = h0, c0, [None] * T
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        if cell == "lstm":
            hn, cn = reference.lstm_step(gx[t], h, c, w_hh, b_hh)
        elif cell == "gru":
            hn, cn = reference.gru_step(gx[t], h, w_hh, b_hh), None
        else:
            hn, cn = reference.rnn_step(gx[t], h, w_hh, b_hh, relu=cell == "rnn_relu"), None
        if lengths is None:
            h, c, ys[t] = hn, cn, hn
        else:
            m = (t < lengths).unsqueeze(1)
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


def check(cell, T, B, H, dtype, device, lengths, reverse, backend="cuda", seed=0, got_fn=None):
    x, lens, probes = make_case(cell, T, B, H, dtype, device, lengths, seed)
    ref_o, ref_g = run(backend_fn("reference"), cell, x, lens, probes, reverse, torch.float64)
    got_o, got_g = run(got_fn or backend_fn(backend), cell, x, lens, probes, reverse, dtype)
    base_o, base_g = run(lowp_recurrence, cell, x, lens, probes, reverse, dtype)
    gnames = [n for n in NAMES[1] if not (n == "d_c0" and cell != "lstm")]
    failures = []
    for names, got, base, ref in ((NAMES[0], got_o, base_o, ref_o), (gnames, got_g, base_g, ref_g)):
        for name, a, b, r in zip(names, got, base, ref):
            assert torch.isfinite(a).all(), f"{name}: non-finite values (unwritten output?)"
            tol = max(2 * rel_err(b, r), FLOOR[dtype])
            e = rel_err(a, r)
            if not e <= tol:
                failures.append(f"{name}: error {e:.3g} > tol {tol:.3g} (torch in {dtype}: {rel_err(b, r):.3g})")
    assert not failures, f"{cell} T={T} B={B} H={H} {dtype} lengths={lengths} reverse={reverse}: " + "; ".join(failures)


@pytest.fixture(params=["persistent", "step"])
def mode(request, monkeypatch):
    monkeypatch.setenv("FUSEDRNN_CUDA_MODE", request.param)
    monkeypatch.setenv("FUSEDRNN_CUDA_POISON", "1")
    return request.param


@gpu
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T, B, H", [(1, 3, 5), (7, 3, 33), (5, 70, 300)], ids=["T1", "odd", "chunks"])
def test_small_sizes(cell, dtype, lengths, reverse, T, B, H, mode):
    check(cell, T, B, H, dtype, torch.device("cuda"), lengths, reverse)


@gpu
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B, T, H", ANCHORS, ids=[f"anchor_B{b}_T{t}_H{h}" for b, t, h in ANCHORS])
def test_anchor_shapes(cell, dtype, B, T, H, monkeypatch):
    monkeypatch.setenv("FUSEDRNN_CUDA_POISON", "1")
    check(cell, T, B, H, dtype, torch.device("cuda"), lengths=False, reverse=False)


@gpu
@pytest.mark.parametrize("cell", CELLS)
def test_anchor_packed_reverse(cell):
    check(cell, 128, 64, 512, torch.bfloat16, torch.device("cuda"), lengths=True, reverse=True)


@gpu
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("cell", CELLS)
def test_repeated_runs_are_bitwise_identical(cell, dtype, mode):
    x, lens, probes = make_case(cell, 9, 37, 200, dtype, torch.device("cuda"), lengths=True)
    first = run(backend_fn("cuda"), cell, x, lens, probes, True, dtype)
    for _ in range(2):
        again = run(backend_fn("cuda"), cell, x, lens, probes, True, dtype)
        for a, b in zip(first[0] + first[1], again[0] + again[1]):
            assert torch.equal(a, b)


@gpu
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_graph_capture(cell, mode):
    """No allocation or synchronisation inside the extension: capture and replay a forward."""
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
        assert torch.equal(a, b)


@gpu
def test_plans_of_the_anchor_shapes():
    """On an H100/H200 every anchor shape must take the persistent kernel (fwd and bwd)."""
    from fusedrnn.ops import cuda as cuda_ops
    major, _ = torch.cuda.get_device_capability()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for cell in CELLS:
        for dtype in DTYPES.values():
            for B, T, H in ANCHORS:
                for bwd in (False, True):
                    p = cuda_ops.plan(cell, dtype, B, H, backward=bwd, mode="auto")
                    assert p["blocks"] >= 1 and p["units_per_block"] >= 1
                    if major == 9 and sms >= 132:
                        assert p["persistent"], (cell, dtype, B, H, bwd, p)


@gpu
def test_step_fallback_covers_sizes_too_large_for_the_persistent_kernel(monkeypatch):
    from fusedrnn.ops import cuda as cuda_ops
    p = cuda_ops.plan("lstm", torch.float32, 4, 4096, mode="auto")
    assert not p["persistent"] and p["reason"]
    monkeypatch.setenv("FUSEDRNN_CUDA_POISON", "1")
    check("lstm", 3, 4, 4096, torch.float32, torch.device("cuda"), lengths=True, reverse=False)
    with pytest.raises(RuntimeError, match="persistent kernel cannot run"):
        cuda_ops.plan("lstm", torch.float32, 4, 4096, mode="persistent")


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
