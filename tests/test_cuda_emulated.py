"""The CUDA kernels themselves (csrc/), run on the CPU through the emulated build
(tools/cuda_emu/build.py, tools/cuda_emu): every tier of the persistent recurrence forced (one CTA, a
cluster exchanging through distributed shared memory, the grid exchanging through flags,
streamed in several passes, and the per-step kernels), both directions in one launch, the
LSTM projection, lengths; forward and backward through fusedrnn.ops.cuda's own launchers;
then the fused decode step. Each CUDA thread is a fiber, and the tensor-core and ldmatrix
fragments are rebuilt from the 32 lanes as the PTX ISA lays them out, so the numbers are
the kernels' own arithmetic.

Tolerance against the float64 reference:
  - bf16 and fp16: the kernel contract's rule (tests/support/contract.py): at most twice the
    error torch.nn makes in the dtype, plus one machine epsilon;
  - fp32: the rule the GPU tests apply to these kernels (tests/gpu/test_cuda_gpu.py), per
    output and gradient relative to its scale: at most twice torch.nn's error, floor 5e-5.
    The kernels compute fp32 products as three tf32 products (csrc/device.cuh), whose error
    is a few times fp32's; on the GPU torch.nn (cuDNN) is the yardstick, here it is the CPU's
    fp32, which is tighter than the GPU's.
Results must not depend on the order the fibers of a CTA run in (a missing __syncthreads
would show as a difference), and every kernel must be deterministic: the orders are compared
bit for bit.
"""
from __future__ import annotations

import ctypes
import os

import pytest
import torch

from support import contract
from tools.cuda_emu import build as cuda_emu
from fusedrnn.ops import cuda
from fusedrnn.ops.common import GRU_RESET_BEFORE
from support.emulated import check
from support.triton_step import reference_step, step_args

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")  # torch.nn's note
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_contract_cases_as_planned(emu, knobs, dtype):
    """Every case of the kernel contract (every cell, the GRU with its reset gate before the
    product included; D = 1 forward and reversed, D = 2; lengths; projections; no bias; T = 1)
    at H = 5, planned as the library plans it for an H100."""
    knobs()
    for case in contract.cases():
        assert contract.declined_by(cuda, case, dtype) is None, case
        check(case, dtype)


def split_cases(H, B=11, T=3):
    lengths = tuple((i * 7) % T + 1 for i in range(B))  # every length 1..T, unsorted
    out = []
    for cell in CELLS:
        for proj in ((False, True) if cell == "lstm" else (False,)):
            out += [contract.Case(cell, 1, False, proj=proj, T=T, B=B, H=H),
                    contract.Case(cell, 1, True, proj=proj, lengths=lengths, T=T, B=B, H=H),
                    contract.Case(cell, 2, False, proj=proj, lengths=lengths, T=T, B=B, H=H)]
    return out


# (mode, units, batch rows, passes, H): H split over NU = 3 or 5 CTAs and B = 11 over two
# batch groups of 8 rows; "grid" with passes streams K through shared memory in 2 passes
# (a pass needs whole 32-byte k-steps per producer: units = 16 for 16-bit, 8 for fp32).
TIERS = {
    "cluster": ("cluster", 8, 8, 0, 24),
    "grid": ("grid", 8, 8, 0, 24),
    "grid-2-passes": ("grid", 16, 8, 2, 40),
    "step": ("step", 0, 0, 0, 24),
}


def _split_params():
    """(tier, dtype, case) of every tier, dtype and split case: one case each, so that the default
    run's covering sample (tests/support/sampling.py) holds every tier, dtype, cell, direction,
    projection and lengths, and `--gates` runs the rest."""
    out = []
    for tier, (_, _, _, passes, H) in TIERS.items():
        for dtype in (torch.float32, torch.bfloat16):
            for case in split_cases(H):
                if passes and case.proj:
                    continue  # P = 3: a projection stage has no whole k-step per producer to stream in passes
                out.append(pytest.param(tier, dtype, case, id=f"{tier}-{str(dtype)[6:]}-{case.cell}-D{case.D}"
                                        f"{'-rev' if case.reverse else ''}{'-proj' if case.proj else ''}"
                                        f"{'-len' if case.lengths else ''}"))
    return out


@pytest.mark.sampled
@pytest.mark.parametrize("tier,dtype,case", _split_params())
def test_tiers_split_over_ctas(emu, knobs, tier, dtype, case):
    """Each tier forced, H split over several CTAs and B over two batch groups, so the
    exchange of h (and of m with a projection, of d_gates backward) crosses CTAs."""
    mode, units, rows, passes, H = TIERS[tier]
    if tier == "grid-2-passes" and dtype == torch.float32:
        units = 8
    knobs(mode, units, rows, passes)
    plan = cuda.plan_for("lstm", dtype, 11, H, mode=mode, units=units, batch_rows=rows, passes=passes)
    assert plan["ok"], plan["reason"]
    if mode != "step":
        lay = plan["layout"]
        assert lay["NU"] >= 3 and lay["NBG"] == 2 and (passes == 0 or lay["NP"] == passes), lay
    check(case, dtype)


# Weight slices kept unpadded (plan.cpp: rows in 8s where whole m-tiles of 16 fit in no pass count;
# the LSTM fp32 backward at B64·H1024, 8 units of W_hhᵀ per CTA, 131 KB instead of 262 KB). At
# H = 24 the emulated device's shared memory (FUSEDRNN_EMU_SMEM_OPTIN) is cut between what the
# unpadded and the padded slices need, so the grid tier's backward keeps 8 rows, and its last
# m-tile reads them twice (csrc/step_matmul.cuh): (dtype, cell, bytes, passes, backward's NP).
UNPADDED = [(torch.float32, "lstm", 9000, 2, 2), (torch.float32, "gru", 7500, 0, 1),
            (torch.float32, "rnn_tanh", 4500, 0, 1), (torch.bfloat16, "lstm", 6500, 0, 1)]


@pytest.mark.parametrize("dtype,cell,smem,passes,np_bwd", UNPADDED,
                         ids=[f"{str(d)[6:]}-{c}" for d, c, *_ in UNPADDED])
def test_unpadded_weight_slice_on_the_grid(emu, knobs, monkeypatch, dtype, cell, smem, passes, np_bwd):
    """The grid tier with 8 weight rows per CTA (an m-tile half real): values and every gradient
    against float64, lengths, both directions, at NU = 3 CTAs and two batch groups."""
    knobs("grid", 8, 8, passes)
    monkeypatch.setenv("FUSEDRNN_EMU_SMEM_OPTIN", str(smem))
    monkeypatch.setattr(cuda, "_plans", {})  # plans cached for the H100's shared memory stand for another device
    for backward in (False, True):
        p = cuda.plan(cell, dtype, 11, 24, backward=backward, device=0)  # what the launches run
        assert p["ok"], p["reason"]
        lay = p["layout"]
        assert lay["NU"] == 3 and lay["NBG"] == 2 and p["smem_bytes"] <= smem - 1024, p
        if backward:  # 8 rows (W_hhᵀ's units), not 16: the padded slice fits in no pass count
            assert lay["RP"] == 8 and lay["NP"] == np_bwd, lay
    lengths = (3, 1, 2, 3, 2, 1, 3, 3, 1, 2, 3)
    for case in (contract.Case(cell, 1, True, lengths=lengths, T=3, B=11, H=24),
                 contract.Case(cell, 2, False, lengths=lengths, T=3, B=11, H=24)):
        check(case, dtype)


# The GRU with its reset gate before the product (csrc/passes_reset.cuh, csrc/step_reset.cuh):
# two exchanges a step (h, then r ⊙ h; backward d(n_pre), then [d(r_pre), d(z_pre)]). Each tier
# forced as TIERS does, at an odd H split unevenly over the CTAs (the last holds one unit): NU = 3,
# and NU = 2 where a 16-bit pass needs 16 units per CTA: (mode, units, batch rows, passes, H).
# In bf16 at H = 24 or 33 the error of these kernels and of the reset-after GRU's alike reaches
# 2.5-5x the reference's own bf16 error (the same on every tier: rounding, not the exchange); the
# contract's yardstick for this cell is the larger of that and torch.nn's bf16 error on its GRU
# (tests/support/contract.py), and "grid-H33" holds the larger H.
RESET_TIERS = {
    "cta": ("cta", 0, 0, 0, 9),
    "cluster": ("cluster", 8, 8, 0, 17),
    "grid": ("grid", 8, 8, 0, 17),
    "grid-2-passes": ("grid", 16, 8, 2, 17),
    "grid-H33": ("grid", 16, 8, 0, 33),
    "step": ("step", 0, 0, 0, 17),
}
RESET_LENGTHS = (3, 1, 2, 3, 2, 1, 3, 3, 1, 2, 3)


def _reset_params():
    out = []
    for tier in RESET_TIERS:
        for dtype in (torch.float32, torch.bfloat16):
            for D, reverse, lengths, T, B, bias in ((1, False, None, 1, 3, True), (1, True, RESET_LENGTHS, 3, 11, True),
                                                    (2, False, RESET_LENGTHS, 3, 11, True),
                                                    (2, False, None, 2, 3, False)):
                out.append(pytest.param(tier, dtype, D, reverse, lengths, T, B, bias,
                                        id=f"{tier}-{str(dtype)[6:]}-D{D}{'-rev' if reverse else ''}"
                                           f"{'-len' if lengths else ''}-T{T}-B{B}{'' if bias else '-nobias'}"))
    return out


@pytest.mark.sampled
@pytest.mark.parametrize("tier,dtype,D,reverse,lengths,T,B,bias", _reset_params())
def test_gru_reset_before_on_every_tier(emu, knobs, tier, dtype, D, reverse, lengths, T, B, bias):
    """y, hT and every gradient (gx, h0, W_hh with its n rows paired with r ⊙ h, b_hh) against
    the float64 reference, both directions, lengths, T = 1, batch 3; multi-CTA tiers exchange
    r ⊙ h (forward) and d(n_pre) (backward) across CTAs between the step's two products."""
    mode, units, rows, passes, H = RESET_TIERS[tier]
    if tier == "grid-2-passes" and dtype == torch.float32:
        units = 8
    knobs(mode, units, rows, passes)
    for backward in (False, True):
        plan = cuda.plan_for(GRU_RESET_BEFORE, dtype, B, H, backward=backward, mode=mode, units=units,
                             batch_rows=rows, passes=passes, directions=D)
        assert plan["ok"], plan["reason"]
        if mode not in ("step", "cta"):
            lay = plan["layout"]
            assert lay["NU"] >= 2 and lay["nst"] == 2 and (passes == 0 or lay["NP"] == passes), lay
    check(contract.Case(GRU_RESET_BEFORE, D, reverse, lengths=lengths, bias=bias, T=T, B=B, H=H), dtype)


def test_gru_reset_before_module_two_layers_bidirectional_packed(cuda_kernels):
    """fusedrnn.GRU(reset_after=False) end to end on the CUDA kernels: two layers, both directions,
    a PackedSequence; y, h_n and the gradients of x, h0 and every parameter (dW_hn from the
    kernels' d(n_pre) and r ⊙ h) against the same module on the float64 reference backend
    (itself checked against a float64 oracle, tests/test_gru_reset_before.py), within the
    Triton suite's fp32 rule, 3e-5 of each tensor's scale."""
    import copy

    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    import fusedrnn
    from support.float64_checks import grads

    torch.manual_seed(5)
    m = fusedrnn.GRU(4, 5, num_layers=2, bidirectional=True, reset_after=False, backend=cuda_kernels)
    ref = copy.deepcopy(m).double()
    ref.backend = "reference"
    lengths = torch.tensor([3, 1, 2])
    x, h0 = torch.randn(3, 3, 4, requires_grad=True), torch.randn(4, 3, 5, requires_grad=True)
    x64, h064 = x.detach().double().requires_grad_(), h0.detach().double().requires_grad_()
    outs = []
    for mod, xx, hh in ((m, x, h0), (ref, x64, h064)):
        out, h = mod(pack_padded_sequence(xx, lengths, enforce_sorted=False), hh)
        y = pad_packed_sequence(out)[0]
        outs.append([y, h, *grads((y, h), [xx, hh, *mod.parameters()])])
    names = ["y", "h_n", "x", "h0"] + [n for n, _ in m.named_parameters()]
    for name, got, want in zip(names, *outs, strict=True):
        err, bound = (got.double() - want).abs().max().item(), 3e-5 * (1.0 + want.abs().max().item())
        assert err <= bound, f"{name}: max error {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_a_warp_tile_of_two_batch_tiles(emu, knobs, dtype):
    """The step matmul is compiled once per warp tile (csrc/step_matmul.cuh: WM m-tiles x WN
    batch tiles, picked by the plan's fields): at batch 16 the LSTM forward's plan gives each
    warp two 8-row batch tiles (WN = 2), which the H = 5 contract cases (WN = 1) never run."""
    knobs()
    lay = cuda.plan_for("lstm", dtype, 16, 16)["layout"]
    assert lay["stages"][0]["WN"] == 2, lay
    lengths = tuple(i % 3 + 1 for i in range(16))
    for case in (contract.Case("lstm", 1, False, T=3, B=16, H=16),
                 contract.Case("lstm", 1, True, lengths=lengths, T=3, B=16, H=16)):
        check(case, dtype)


def _run(case, dtype):
    args, lengths, cot = contract.make_args(case, dtype, "cpu", seed=3)
    fixed = (args["gx"], args["h0"], args["c0"], args["w_hh"], args["b_hh"], lengths, case.reverse)
    proj = {"w_hr": args["w_hr"]} if case.proj else {}
    y, hT, cT, saved = cuda.forward(case.cell, *fixed, True, **proj)
    back = cuda.backward(case.cell, cot["dy"], cot["dhT"], cot["dcT"], *fixed, y.clone(), saved, **proj)
    return [t for t in (y, hT, cT, *saved, *back) if t is not None]


@pytest.mark.parametrize("tier", ["cluster", "grid-2-passes"])
def test_results_do_not_depend_on_the_order_threads_run(emu, knobs, monkeypatch, tier):
    """The fibers of each CTA run forward, reversed and shuffled: bitwise the same outputs.
    A read of shared memory that a __syncthreads should have ordered after a write would
    see the old value in one of the orders."""
    mode, units, rows, passes, H = TIERS[tier]
    knobs(mode, units, rows, passes)
    cases = [contract.Case("lstm", 2, proj=tier != "grid-2-passes", lengths=(3, 1, 2, 3, 2, 1, 3, 3, 1, 2, 3), T=3, B=11, H=H),
             contract.Case("gru", 1, True, T=3, B=11, H=H),
             # two exchanges a step (csrc/passes_reset.cuh)
             contract.Case(GRU_RESET_BEFORE, 2, lengths=(3, 1, 2, 3, 2, 1, 3, 3, 1, 2, 3), T=3, B=11, H=H)]
    for case in cases:
        runs = {}
        for order in ("forward", "reverse", "random:1", "random:2"):
            monkeypatch.setenv("FUSEDRNN_EMU_ORDER", order)
            runs[order] = _run(case, torch.bfloat16)
        for order, outs in runs.items():
            for k, (a, b) in enumerate(zip(outs, runs["forward"], strict=True)):
                assert torch.equal(a, b) or (a.isnan() == b.isnan()).all() and torch.equal(a.nan_to_num(), b.nan_to_num()), \
                    f"{case}, order {order}: output {k} differs from the forward order"


@pytest.mark.parametrize("tier", ["grid", "grid-2-passes"])
def test_consumers_wait_for_a_late_producer(emu, knobs, monkeypatch, tier):
    """The last CTA of the first batch group sleeps at each __syncthreads (FUSEDRNN_EMU_SLOW_CTA),
    so the other CTAs run ahead of it. A consumer that copied a chunk of an exchange round
    before that producer's flag said it was published (for instance pass 1's chunk, whose
    polls are in flight during pass 0's matmul, copied without waiting for them) reads the
    previous round's values there, and the results are wrong."""
    mode, units, rows, passes, H = TIERS[tier]
    knobs(mode, units, rows, passes)
    lay = cuda.plan_for("lstm", torch.bfloat16, 11, H, mode=mode, units=units, batch_rows=rows, passes=passes)["layout"]
    monkeypatch.setenv("FUSEDRNN_EMU_SLOW_CTA", f"{lay['NU'] - 1}:20000")
    for case in (contract.Case("lstm", 1, T=3, B=11, H=H), contract.Case("gru", 1, True, T=3, B=11, H=H)):
        check(case, torch.bfloat16)
    # the reset-before GRU's second exchange (r ⊙ h; backward d(n_pre)), in fp32: at these H its bf16
    # error is past the reference's own bf16 yardstick on every tier alike (RESET_TIERS)
    check(contract.Case(GRU_RESET_BEFORE, 1, True, lengths=(3, 1, 2, 3, 2, 1, 3, 3, 1, 2, 3), T=3, B=11, H=H),
          torch.float32)


def test_a_flag_wait_past_the_spin_limit_reports_the_late_producer(emu, knobs, monkeypatch, capfd):
    """The grid tier's poll sweep keeps the timeout hook: a producer late past the spin limit
    (here: 2 s at each of its __syncthreads, a 0.5 s limit on the emulator's 1 MHz clock) makes
    its consumers print which CTA they waited for and latch, and the call raises naming it
    (the one timeout policy: on the CPU a timeout raises from the call that timed out)."""
    mode, units, rows, passes, H = TIERS["grid"]
    knobs(mode, units, rows, passes)
    NU = cuda.plan_for("lstm", torch.float32, 11, H, mode=mode, units=units, batch_rows=rows)["layout"]["NU"]
    monkeypatch.setenv("FUSEDRNN_EMU_SLOW_CTA", f"{NU - 1}:2000000")
    monkeypatch.setenv(cuda.SPIN_ENV, "500000")
    args, lengths, _ = contract.make_args(contract.Case("lstm", 1, T=3, B=11, H=H), torch.float32, "cpu")
    with pytest.raises(RuntimeError, match=rf"timed out: CTA \d+ waited at step \d+ for the h chunk of CTA {NU - 1} "):
        cuda.forward("lstm", args["gx"], args["h0"], args["c0"], args["w_hh"], args["b_hh"], lengths, False, False)
    ctypes.CDLL(None).fflush(None)  # the kernel's printf, out of the C library's buffer
    out = capfd.readouterr().out
    assert f"waiting for the chunk of CTA {NU - 1} " in out, out


def test_clusters_that_do_not_fit_run_as_smaller_clusters(emu, knobs, monkeypatch):
    """FUSEDRNN_EMU_MAX_CLUSTER=8: the emulated device holds no 16-CTA cluster (as a GPU may not,
    for the kernel's registers and shared memory). The plan asks the device
    (cudaOccupancyMaxActiveClusters) and takes clusters of 8, where before the 16-CTA launch
    was refused and AUTO ran the per-step kernels; the reason (fusedrnn.explain's text) says so."""
    import warnings

    knobs()
    case = contract.Case("lstm", 1, T=3, B=1, H=256)
    assert cuda.plan("lstm", torch.bfloat16, 1, 256, device=0)["cluster"] == 16
    monkeypatch.setenv("FUSEDRNN_EMU_MAX_CLUSTER", "8")
    monkeypatch.setattr(cuda, "_warned", set())
    for backward in (False, True):
        p = cuda.plan("lstm", torch.bfloat16, 1, 256, backward=backward, device=0)
        assert p["tier"] == "cluster" and 1 < p["cluster"] <= 8, p
        assert "clusters of 16 CTAs do not fit" in p["reason"] and "limited to 8 CTAs" in p["reason"], p["reason"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a refused launch warns that it ran per step
        check(case, torch.bfloat16)


@pytest.mark.parametrize("refuse, max_cluster, tier", [("cluster", "", "cluster"), ("cooperative", "1", "grid")])
def test_a_refused_persistent_launch_runs_per_step_with_one_warning(emu, knobs, monkeypatch, refuse, max_cluster,
                                                                   tier):
    """FUSEDRNN_EMU_REFUSE: the emulated device refuses cluster or cooperative launches, as a GPU
    under MPS or with busy SMs may. AUTO runs the per-step kernels instead, the results meet the
    contract, and the fallback warns once per launch. (The test hook lives in the emulated
    runtime, not in the production call; FUSEDRNN_EMU_MAX_CLUSTER=1 leaves the grid tier.)"""
    import warnings

    knobs("auto", 8)  # 8 units per CTA: H = 33 spans 5 CTAs, so a persistent tier needs a cluster or the grid
    monkeypatch.setenv("FUSEDRNN_EMU_MAX_CLUSTER", max_cluster)
    monkeypatch.setattr(cuda, "_warned", set())
    # the emulated runtime's cluster capacity changes here, as a real device's never does within a
    # process: plans cached by an earlier test for this shape would stand for another device
    monkeypatch.setattr(cuda, "_plans", {})
    case = contract.Case("gru", 1, True, lengths=(5, 2, 4), T=5, B=3, H=33)
    for backward in (False, True):
        p = cuda.plan("gru", torch.bfloat16, 3, 33, backward=backward, device=0, units=8)
        assert p["tier"] == tier, p
    monkeypatch.setenv("FUSEDRNN_EMU_REFUSE", refuse)
    with pytest.warns(RuntimeWarning, match=f"the {tier} launch of .* was refused .*ran the per-step kernels instead"):
        check(case, torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        check(case, torch.bfloat16)


STEP_SIZES = [(1, 24, 40), (3, 5, 7), (9, 32, 24)]  # (B, I, H): one row, odd sizes (scalar loads), two row blocks


@pytest.mark.sampled
@pytest.mark.parametrize("B,I,H", STEP_SIZES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("cell", CELLS)
def test_fused_decode_step(emu, cell, dtype, B, I, H):
    """csrc/cell_step.cuh against the float64 reference step: fp32 within 3e-5 of the scale,
    16-bit no worse than twice the reference's own error in the dtype (floor 1e-6), the rule
    of the Triton step (tests/test_triton_step.py)."""
    args = step_args(cell, B, I, H, dtype, seed=B * 100 + H)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = args
    h = torch.full((B, H), float("nan"), dtype=dtype)
    c = torch.full((B, H), float("nan"), dtype=dtype) if cell == "lstm" else None
    ptr = lambda t: t.data_ptr() if t is not None else 0  # noqa: E731
    emu.cell_step(cell, cuda.DTYPE_CODES[dtype], B, I, H, x.data_ptr(), h0.data_ptr(), ptr(c0), w_ih.data_ptr(),
                  w_hh.data_ptr(), ptr(b_ih), ptr(b_hh), h.data_ptr(), ptr(c), 0, 0)
    truth = reference_step(cell, args, torch.float64)
    low = reference_step(cell, args, dtype)
    for k, (a, want) in enumerate(zip([h] + ([c] if c is not None else []), truth)):
        scale = 1.0 + want.abs().max().item()
        if dtype == torch.float32:
            bound = 3e-5 * scale
        else:
            bound = max(2.0 * (low[k] - want).abs().max().item(), 1e-6 * scale)
        err = (a.double() - want).abs().max().item()
        assert err <= bound, (k, err, bound)


def test_emulator_reports_a_kernel_error_instead_of_crashing(emu, knobs, monkeypatch):
    """A launch that cannot finish (here: the deadline set to nothing) raises RuntimeError
    naming the emulator, and the next launch runs normally."""
    knobs("grid", 8, 8, 0)
    case = contract.Case("rnn_tanh", 1, T=3, B=11, H=24)
    monkeypatch.setenv("FUSEDRNN_EMU_TIMEOUT", "0")
    with pytest.raises(RuntimeError, match="fusedrnn emu: .*deadline"):
        _run(case, torch.float32)
    monkeypatch.delenv("FUSEDRNN_EMU_TIMEOUT")
    check(case, torch.float32)


@pytest.fixture
def unchecked(monkeypatch):
    """The default: no checking switch set, the CUDA default spin limit unscaled."""
    from fusedrnn.ops import timeouts
    for name in (timeouts.CHECK_ENV, *timeouts.CHECK_ALIASES, timeouts.SCALE_ENV):
        monkeypatch.delenv(name, raising=False)
    return timeouts


GRID_TIMEOUT = r"fusedrnn cuda rnn_tanh forward: the forward persistent kernel \(grid tier\) timed out: CTA \d+ waited"
#: emulated CTAs are threads: a wait of one (1 MHz) cycle times out in most launches, not in every one
ATTEMPTS = 6


def test_a_flag_wait_that_times_out_raises_from_the_call_unchecked(emu, knobs, unchecked, monkeypatch):
    """A spin limit of one (emulated, 1 MHz) cycle: some grid-tier wait gives up. With no check
    switch set the call itself raises (the launch has finished when an emulated call returns;
    on a GPU the report waits for the next call, or synchronously with FUSEDRNN_CHECK=1)."""
    knobs("grid", 8, 8, 0)
    monkeypatch.setenv(cuda.SPIN_ENV, "1")
    case = contract.Case("rnn_tanh", 1, T=6, B=11, H=24)
    with pytest.raises(RuntimeError, match=GRID_TIMEOUT):
        for _ in range(ATTEMPTS):
            _run(case, torch.float32)
    monkeypatch.delenv(cuda.SPIN_ENV)
    check(case, torch.float32)  # the next launch is clean


def test_a_captured_grid_launch_is_checked_after_the_replay(emu, knobs, unchecked, monkeypatch):
    """Under a (pretended) CUDA-graph capture the report is not read; a watch keeps it for the
    check after the replay. Only the grid tier's launches are kept: the others cannot time out."""
    monkeypatch.setattr(unchecked, "_capturing", lambda: True)
    monkeypatch.setenv(cuda.SPIN_ENV, "1")
    case = contract.Case("rnn_tanh", 1, T=6, B=11, H=24)
    args, lengths, _ = contract.make_args(case, torch.float32, "cpu", seed=3)
    fixed = (args["gx"], args["h0"], None, args["w_hh"], args["b_hh"], lengths, False, False)
    knobs("cta")
    with unchecked.watch() as watch:
        cuda.forward("rnn_tanh", *fixed)
    assert len(watch) == 0
    knobs("grid", 8, 8, 0)
    with pytest.raises(RuntimeError, match=GRID_TIMEOUT + r".*\(in a CUDA-graph replay\)"):
        for _ in range(ATTEMPTS):
            with unchecked.watch() as watch:
                cuda.forward("rnn_tanh", *fixed)  # no error here: nothing is read under capture
            assert len(watch) == 1
            watch.check()


def test_the_emulated_build_is_the_csrc_sources(emu):
    """The module under test is built from this checkout's csrc (the cache key is their hash)."""
    path = cuda_emu.build()
    assert os.path.dirname(path).endswith(cuda_emu._digest(cuda_emu.cuda_include()))


# -- hostile input through the whole library: modules and fusedrnn.ops.recurrence ---------

from hypothesis import example, given, settings  # noqa: E402

from support.hostile import (  # noqa: E402
    FIXTURE_OK, ISSUE_EXAMPLES, check_module_example, check_recurrence_example, hostile_modules,
    hostile_recurrences)


# Examples hypothesis found against these kernels: relu'(NaN) must pass the gradient, as
# torch's threshold_backward does (csrc/cells/rnn.cuh had h > 0 ? dh : 0).
RELU_NAN_MODULE = dict(cell="rnn_relu", I=1, H=1, layers=2, bidir=True, batch_first=False, T=1, B=1, kind="padded",
                       hx="shares-x", x_layout="plain", poison="x", value=-float("inf"), where=0, seed=0)
RELU_NAN_RECURRENCE = dict(cell="rnn_relu", reverse=False, lengths=[1, 1, 1], poison="h0 of short sequences",
                           value=float("nan"), seed=0,
                           layouts={k: "plain" for k in ("gx", "h0", "c0", "w_hh", "b_hh", "lengths", "y", "hT", "cT")})


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURE_OK)
@given(c=hostile_modules())
@example(c=ISSUE_EXAMPLES[0])
@example(c=ISSUE_EXAMPLES[1])
@example(c=RELU_NAN_MODULE)
def test_hostile_module_input(cuda_kernels, c):
    """tests/test_hostile_properties.py's module property (strided and aliased input and states,
    packed sequences, NaN/±inf, layers, both directions) through the CUDA kernels."""
    check_module_example(c, cuda_kernels)


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURE_OK)
@given(c=hostile_recurrences())
@example(c=RELU_NAN_RECURRENCE)
def test_hostile_recurrence_arguments(cuda_kernels, c):
    """Its recurrence property (every argument strided or expanded, lengths included, non-finite
    values at padded steps and in the states of short sequences) through the CUDA kernels."""
    check_recurrence_example(c, cuda_kernels)


@pytest.mark.sampled
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("cell", CELLS)
def test_nonfinite_state_reaches_what_torch_nn_reaches(cuda_kernels, cell, dtype, value):
    """inf/NaN in h0: the same NaN and ±inf positions as torch.nn in outputs and gradients (fp32:
    the three tf32 products keep inf * w = ±inf, csrc/device.cuh)."""
    assert contract.nonfinite_mismatches(cuda_kernels, cell, dtype, value) == []
