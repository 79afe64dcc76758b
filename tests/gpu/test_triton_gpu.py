"""backend="triton" on a CUDA device, against the float64 reference (values and the
gradients of gx, h0, c0, w_hh, b_hh), in every layout, plus what only a GPU can show:
fp32 through tf32x3 tensor cores, cooperative barrier grids, graph capture, concurrent
launches from threads, and the lazy barrier-timeout error; and the fused decode step
(`tri.step`) against the float64 reference and captured in a CUDA graph.

Rule: each output/gradient's max error is at most twice the error of the reference run
in the same dtype on the same GPU (for fp32 that is torch's own fp32 error, the yardstick
for the tf32x3 products; floor 3e-5, 16-bit 1e-6, relative to the tensor's scale).
Debug mode is on unless a test says otherwise: outputs start NaN-filled and a timed-out
grid barrier raises right after its launch.

Layouts are forced through the documented knob config.TUNING["layout"] (environment
FUSEDRNN_TRITON_LAYOUT=cta|grid|solo) and through the choice code's own candidates
(tests/test_triton_layouts.py runs those on the device as well). The anchor shapes run
at T=32: T never changes what is launched. A failing case names its layout in the id. Run the compile gate first on the GPU machine
(`python -m tools.compile_check --backends triton --shapes ci -j 16`): it compiles
every anchor kernel under the key a launch computes, so these tests start warm.
"""
from __future__ import annotations

import threading

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from fusedrnn.ops import triton as tri  # noqa: E402
from fusedrnn.ops.triton import config  # noqa: E402
from support.triton_recurrence import errors, make_args, run  # noqa: E402  (tests/ is on sys.path)

DEV = torch.device("cuda")
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: (B, H) from docs/anchors.md
ANCHORS = [(1, 256), (8, 128), (16, 768), (64, 1024), (256, 512)]
#: (T, B, H, lengths, reverse): ragged sizes, masks everywhere, several batch tiles
AWKWARD = [(9, 3, 67, True, True), (5, 70, 200, False, False), (17, 1, 300, True, False)]


@pytest.fixture(autouse=True)
def debug_mode(monkeypatch):
    monkeypatch.setenv("FUSEDRNN_CHECK", "1")  # NaN-filled outputs: an unwritten element fails


def check(cell, T, B, H, dtype, lengths, reverse, bias=True):
    args, lens = make_args(cell, T, B, H, dtype, lengths, bias, seed=T + B + H, device=DEV)
    if lens is not None:
        lens = lens.to(DEV)
    ours = run(cell, args, lens, reverse, "triton")
    truth = run(cell, args, lens, reverse, "reference", dtype=torch.float64)
    ref = errors(run(cell, args, lens, reverse, "reference", dtype=dtype), truth)
    err = errors(ours, truth)
    floor = 3e-5 if dtype == torch.float32 else 1e-6
    bound = {k: max(2.0 * ref[k], floor * (1.0 + truth[k].abs().max().item())) for k in truth}
    bad = {k: (err[k], bound[k]) for k in truth if not err[k] <= bound[k]}
    assert not bad, f"error above bound (err, bound): {bad}"


def launch_of(cell, B, H, dtype, direction="fwd"):
    return config.choose(cell, B, H, dtype, config.device_limits(DEV), direction)


#: each layout with each cell once, cycling through the awkward shapes and the dtypes
FORCED = [(layout, cell, AWKWARD[(i + j) % len(AWKWARD)], DTYPES[(i + 2 * j) % len(DTYPES)])
          for i, layout in enumerate(config.LAYOUTS) for j, cell in enumerate(CELLS)]


@pytest.mark.parametrize("layout,cell,shape,dtype", FORCED,
                         ids=[f"{lay}-{c}-{s[:3]}-{str(d)[6:]}" for lay, c, s, d in FORCED])
def test_forced_layout_small(monkeypatch, layout, cell, shape, dtype):
    monkeypatch.setitem(config.TUNING, "layout", layout)
    T, B, H, lengths, reverse = shape
    check(cell, T, B, H, dtype, lengths, reverse)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,H", ANCHORS, ids=lambda v: str(v))
def test_anchor_shapes(cell, dtype, B, H):
    """What the library launches at each anchor (B, H) on this GPU, at T=32."""
    check(cell, 32, B, H, dtype, lengths=False, reverse=False)


@pytest.mark.parametrize("cell", CELLS)
def test_anchor_with_lengths_reverse(cell):
    check(cell, 64, 8, 128, torch.bfloat16, lengths=True, reverse=True)


def test_barrier_grids_fit_this_gpu():
    sms = torch.cuda.get_device_properties(DEV).multi_processor_count
    for B, H in ANCHORS:
        for cell in CELLS:
            for direction in ("fwd", "bwd"):
                for proj, D in ((0, 1), (0, 2)) + (((H // 4, 1), (H // 4, 2)) if cell == "lstm" else ()):
                    launch = config.choose(cell, B, H, torch.bfloat16, config.device_limits(DEV), direction,
                                           proj=proj, directions=D)
                    programs = launch.grid[0] * launch.grid[1] * launch.grid[2]
                    assert programs <= sms * config.TUNING["programs_per_sm"] or not launch.BARRIER


def _grid_case(monkeypatch, cell="lstm", T=64, B=3, H=200):
    monkeypatch.setitem(config.TUNING, "layout", "grid")
    launch = launch_of(cell, B, H, torch.float32)
    assert launch.BARRIER, launch
    (gx, h0, c0, w, b), _ = make_args(cell, T, B, H, torch.float32, lengths=False, bias=True, device=DEV)
    return [t.detach() if t is not None else None for t in (gx, h0, c0, w, b)]


def test_timeout_raises_lazily(monkeypatch):
    """spin_limit 0: no program waits, so some step finds the barrier short and raises the
    flag; the launcher's lazy check turns it into a RuntimeError (no sync per call)."""
    monkeypatch.delenv("FUSEDRNN_CHECK", raising=False)
    gx, h0, c0, w, b = _grid_case(monkeypatch)
    monkeypatch.setitem(config.TUNING, "spin_limit", 0)
    tri.forward("lstm", gx, h0, c0, w, b, None, False, False)
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        tri.check_barriers(block=True)
    monkeypatch.setitem(config.TUNING, "spin_limit", 1 << 22)
    tri.forward("lstm", gx, h0, c0, w, b, None, False, False)
    tri.check_barriers(block=True)  # a healthy launch leaves nothing behind


def test_graph_capture_of_a_barrier_grid(monkeypatch):
    """A cooperative barrier-grid launch captures in a CUDA graph and replays to the eager result."""
    monkeypatch.delenv("FUSEDRNN_CHECK", raising=False)
    gx, h0, c0, w, b = _grid_case(monkeypatch)
    with torch.no_grad():
        eager = tri.forward("lstm", gx, h0, c0, w, b, None, False, False)[0]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            tri.forward("lstm", gx, h0, c0, w, b, None, False, False)  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = tri.forward("lstm", gx, h0, c0, w, b, None, False, False)[0]
        graph.replay()
        torch.cuda.synchronize()
    assert torch.equal(captured, eager)
    tri.check_barriers(block=True)


def test_concurrent_launches_from_threads(monkeypatch):
    """No shared launch state: two threads on two streams get their own sync buffers."""
    gx, h0, c0, w, b = _grid_case(monkeypatch)
    with torch.no_grad():
        want = tri.forward("lstm", gx, h0, c0, w, b, None, False, False)[0]
        got, errs = [None, None], []

        def work(i):
            try:
                with torch.cuda.stream(torch.cuda.Stream()):
                    for _ in range(5):
                        got[i] = tri.forward("lstm", gx, h0, c0, w, b, None, False, False)[0]
                    torch.cuda.current_stream().synchronize()
            except Exception as e:  # reported below
                errs.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errs and all(torch.equal(g, want) for g in got)


# ---- contract v2: the LSTM projection and both directions in one launch -------------------
# Backend-level checks (tests/test_triton_projection.py's check_v2: each direction against its
# own float64 reference run, values and every gradient including dW_hr), on this GPU in the
# configuration the choice code picks here, at T=32 (T never changes what is launched).

from support.triton_projection import check_v2  # noqa: E402


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("B,H", ANCHORS, ids=lambda v: str(v))
def test_v2_projection_at_the_anchors(B, H, dtype):
    """LSTM with proj_size = H/4 (H1024·P256 at B64), one direction."""
    check_v2("lstm", 32, B, H, H // 4, 1, dtype, lengths=False, seed=B + H)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,H", ANCHORS, ids=lambda v: str(v))
def test_v2_two_directions_at_the_anchors(cell, B, H):
    """Both directions in one launch (the grid's programs of both directions co-resident)."""
    check_v2(cell, 32, B, H, None, 2, torch.bfloat16, lengths=False, seed=B + H)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_v2_encoder_layer_and_projection_with_lengths(dtype):
    """The encoder's layer (B32·H512, both directions) with lengths, and with a projection."""
    check_v2("lstm", 64, 32, 512, None, 2, dtype, lengths=True, seed=1)
    check_v2("lstm", 48, 32, 512, 128, 2, dtype, lengths=True, seed=2)


#: AWKWARD's first two and a size the cta layout holds (H24: cta runs there, LSTM forward included)
V2_SHAPES = [(7, 5, 24, True, False)] + AWKWARD[:2]
V2_FORCED = [(layout, cell, shape, P) for layout in config.LAYOUTS for cell, P in (("lstm", 7), ("gru", None))
             for shape in V2_SHAPES]


@pytest.mark.parametrize("layout,cell,shape,P", V2_FORCED,
                         ids=[f"{lay}-{c}-{s[:3]}-P{p}" for lay, c, s, p in V2_FORCED])
def test_v2_forced_layouts(monkeypatch, layout, cell, shape, P):
    """Every layout with a projection and two directions (cta runs the LSTM forward only)."""
    monkeypatch.setitem(config.TUNING, "layout", layout)
    T, B, H, lengths, _ = shape
    check_v2(cell, T, B, H, P, 2, torch.float16, lengths, seed=T + H)
    check_v2(cell, T, B, H, P, 1, torch.float32, lengths, reverse=True, seed=T + B)


def test_v2_two_launches_in_turn(monkeypatch):
    """The fallback of two directions: one launch per direction (FLAG_DIR1 on the second)."""
    real = config.choose

    def in_turn(*a, **k):
        launch = real(*a, **k)
        return launch._replace(grid=launch.grid[:2] + (1,)) if launch.D == 2 else launch

    monkeypatch.setattr(config, "choose", in_turn)
    check_v2("lstm", 32, 16, 768, 192, 2, torch.bfloat16, lengths=True, seed=5)
    check_v2("rnn_relu", 32, 64, 1024, None, 2, torch.float32, lengths=False, seed=6)


def test_v2_graph_capture_of_two_directions(monkeypatch):
    """Both directions' barrier grid captures in a CUDA graph and replays to the eager result."""
    monkeypatch.delenv("FUSEDRNN_CHECK", raising=False)
    from support.triton_projection import make_v2_args
    args, _ = make_v2_args("lstm", 64, 3, 200, 50, 2, torch.float32, False, True)
    a = [args[k] for k in ("gx", "h0", "c0", "w_hh", "b_hh")]
    assert config.choose("lstm", 3, 200, torch.float32, config.device_limits(DEV), "fwd", proj=50,
                         directions=2).BARRIER
    with torch.no_grad():
        eager = tri.forward("lstm", *a, None, False, False, args["w_hr"])[0]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            tri.forward("lstm", *a, None, False, False, args["w_hr"])
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = tri.forward("lstm", *a, None, False, False, args["w_hr"])[0]
        graph.replay()
        torch.cuda.synchronize()
    assert torch.equal(captured, eager)
    tri.check_barriers(block=True)


# -- the fused decode step (step_kernel.py) ----------------------------------------------

#: (B, I, H): the 2-layer decoder's sizes (benchmarks/decode.py), a full batch tile, an odd edge
STEP_SIZES = [(1, 1024, 1024), (8, 512, 512), (64, 1024, 1024), (3, 33, 37)]


@pytest.mark.parametrize("B,I,H", STEP_SIZES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("cell", CELLS)
def test_step_matches_the_float64_reference(cell, dtype, B, I, H):
    """The rule above: at most twice the reference's error in the dtype (fp32: tf32x3 products
    against torch's fp32 GEMMs), floor 3e-5 fp32 / 1e-6 16-bit of the scale; NaN-filled outputs."""
    from support.triton_step import reference_step, step_args
    args = step_args(cell, B, I, H, dtype, seed=B + I + H, device=DEV)
    with torch.no_grad():
        h, c = tri.step(cell, *args)
        truth = reference_step(cell, args, torch.float64)
        ref = reference_step(cell, args, dtype)
    floor = 3e-5 if dtype == torch.float32 else 1e-6
    for k, (a, want) in enumerate(zip([h] + ([c] if cell == "lstm" else []), truth)):
        bound = max(2.0 * (ref[k] - want).abs().max().item(), floor * (1.0 + want.abs().max().item()))
        err = (a.double() - want).abs().max().item()
        assert err <= bound, (k, err, bound)


def test_graph_capture_of_a_decode_step(monkeypatch):
    """tri.step captures in a CUDA graph (one launch, nothing allocated but its outputs, no
    synchronisation) and replays new inputs, copied into the captured ones, to the eager result."""
    monkeypatch.delenv("FUSEDRNN_CHECK", raising=False)
    from support.triton_step import step_args
    static = step_args("lstm", 8, 512, 512, torch.bfloat16, seed=1, device=DEV)
    fresh = step_args("lstm", 8, 512, 512, torch.bfloat16, seed=2, device=DEV)
    with torch.no_grad():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            tri.step("lstm", *static)  # warm-up (the JIT compile) outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            h, c = tri.step("lstm", *static)
        for dst, src in zip(static[:3], fresh[:3]):  # x, h0, c0: a new token and state
            dst.copy_(src)
        graph.replay()
        want_h, want_c = tri.step("lstm", *fresh)
        torch.cuda.synchronize()
    assert torch.equal(h, want_h) and torch.equal(c, want_c)
