"""The critical-path check (issue 29): an anchor kernel's step may take at most 2 dependent
global round trips (a flag's acquire and the data it guards) plus one per extra pass over K,
read from the compiled SASS by tools/compile_check/sass_path.py. No GPU: a regression
in the compiled step shows here.

CUDA: every anchor (cell, dtype, B, H, direction), from the compile gate's cached build of
csrc/ (build/compile_check; shared with tests/test_cuda_compile_gate.py). Triton: a handful
of anchor kernels, compiled in a subprocess without TRITON_INTERPRET (Triton's cache makes
a rerun fast); the pipelined kernels compile slowly, so the default run compiles
TRITON_DEFAULT (the grid-barrier LSTM at B1·H256 the reader test reads, the RNN's cta kernel
there, the LSTM at B8·H128, the reset-before GRU and the LSTM with zoneout and recurrent
dropout) and the full run (FUSEDRNN_FULL_TESTS=1, CI) all of TRITON_CASES: every cell plain
and with every mask of zoneout and recurrent dropout ("+zo+rd", whose masks must load before
the step's wait, as the inputs do), forward and backward. Kernels over the limit today are strict
xfails ("awaiting #29 kernel work"): the kernel work of issue 29 turns each into a pass, and
a strict xfail that passes fails, so the list must shrink with it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools.compile_check.cases import ANCHORS, CELLS, DTYPES, TRITON_ONLY_CELLS
from tools.compile_check import cuda_rows
from tools.compile_check.critical_path import REGULARISED

ROOT = Path(__file__).resolve().parents[1]
AWAITING = "awaiting #29 kernel work"
pytestmark = pytest.mark.gate  # `bash scripts/test.sh --gates` (tests/support/tiers.py)

#: (backend, cell, dtype, B, H, direction) of the kernels over the limit at this commit, with
#: the round trips the check read (benchmarks/NOTES.md, "Critical path")
OVER_TODAY: dict[tuple, int] = {
    # none. The last two: the Triton LSTM bf16 backward at B16·H768 (4: its 12 pieces' loads in two
    # sweeps) until its pieces split over batch tiles of 8 rows (config.resident_bwd_n8, one sweep);
    # the CUDA LSTM fp32 backward at B64·H1024 ran per step (6: one launch a step, its loads serial)
    # until the plan kept its W_hhᵀ slice unpadded (8 rows, not 16) and it fit the grid. The CUDA
    # grid tier reads 2 (a flag, the data it guards) with one pass and 3 with several since the walk
    # follows the plan's pass count and leaves a wait loop at its readiness test
}

TRITON_CASES = (("lstm", "bf16", 1, 256, "fwd"),
                ("rnn_tanh", "bf16", 1, 256, "fwd"), ("rnn_tanh", "bf16", 1, 256, "bwd"),
                ("lstm", "bf16", 8, 128, "fwd"), ("gru", "bf16", 8, 128, "bwd"),
                ("lstm", "bf16", 16, 768, "fwd"), ("gru", "bf16", 16, 768, "fwd"), ("rnn_tanh", "bf16", 16, 768, "fwd"),
                # the backward over batch tiles of 8 rows, W on the M side (config.resident_bwd_n8): the LSTM's
                # 12 pieces load in one sweep (in one 16-row tile two sweeps, 4 round trips: a strict xfail)
                ("gru", "bf16", 16, 768, "bwd"),
                ("lstm", "bf16", 16, 768, "bwd"),
                # a 16-bit backward's one piece of 1024 split in K (pieces of 256, one sweep): it read 3
                # round trips at RNN B16·H768 (its loads in two groups), a chain of 128 mma per warp
                ("rnn_tanh", "bf16", 16, 768, "bwd"), ("lstm", "bf16", 1, 256, "bwd"), ("gru", "bf16", 1, 256, "bwd"),
                # the reset-before GRU: two exchanges per step (r ⊙ h_{t-1} between them), 4 allowed
                ("gru_reset_before", "bf16", 8, 128, "fwd"), ("gru_reset_before", "bf16", 8, 128, "bwd"),
                # fp32 forwards with W_hh resident in narrow pieces (config.resident_pieces_fp32): they streamed
                # it in chunks of 64, 2-4 round trips (the LSTM's spilled 40 and 72 bytes, the GRU's 64 and 56)
                *((cell, "fp32", 1, 256, "fwd") for cell in ("lstm", "gru", "rnn_tanh")),
                ("lstm", "fp32", 8, 128, "fwd"), ("gru", "fp32", 8, 128, "fwd"),
                # the fp32 RNN B16·H768 forward in 6 pieces of 128 split in K (it streamed: 8 round trips, 48 B spilled)
                ("rnn_tanh", "fp32", 16, 768, "fwd"),
                # fp32 backwards resident in pieces of 128 split in K, their loads in one sweep, each piece held
                # behind the last load (tiles.behind): ptxas issued them in 2-4 groups, 3-5 round trips
                *((cell, "fp32", 1, 256, "bwd") for cell in ("lstm", "gru", "rnn_tanh")),
                ("lstm", "fp32", 8, 128, "bwd"), ("gru", "fp32", 8, 128, "bwd"), ("rnn_tanh", "fp32", 16, 768, "bwd"),
                # W_hh resident in wide tiles at the large shapes (config.resident_wide): they streamed it in
                # chunks of 64, 6-11 round trips forward, 6-10 the RNN backward (no spill either way)
                ("rnn_tanh", "bf16", 256, 512, "fwd"), ("rnn_tanh", "bf16", 256, 512, "bwd"),
                ("rnn_tanh", "bf16", 64, 1024, "fwd"), ("rnn_tanh", "bf16", 64, 1024, "bwd"),
                ("lstm", "bf16", 256, 512, "fwd"), ("gru", "bf16", 256, 512, "fwd"),
                # zoneout and recurrent dropout (every mask the cell has): the plain cell's allowance
                *((cell + REGULARISED, "bf16", 8, 128, d) for cell in CELLS + TRITON_ONLY_CELLS
                  for d in ("fwd", "bwd")))
#: the anchor rows whose layout runs several tiles per program (config.choose, bf16: B256·H512):
#: the regularised kernel's masks load beside the tile's inputs, before the product's loop, so
#: its round trips are the plain kernel's (they were 4 more per step, a mask loaded after the loop).
#: The LSTM's and GRU's forwards keep W_hh resident in one wide tile (config.resident_wide) since
#: (their masked kernels still stream it: resident_wide admits no extra live tiles)
MULTI_TILE_ROWS = (("lstm", "bf16", 256, 512, "bwd"), ("gru", "bf16", 256, 512, "bwd"),
                   ("gru_reset_before", "bf16", 256, 512, "fwd"), ("gru_reset_before", "bf16", 256, 512, "bwd"))
#: kernels that must not spill beyond the compile gate's anchors: the reset-before GRU's backward
#: at B8·H256 (W_hh resident in one piece over r and z, n's rows in another: config.resident_bwd_gates)
SPILL_FREE = (("gru_reset_before", "bf16", 8, 256, "bwd"), ("gru_reset_before" + REGULARISED, "bf16", 8, 256, "bwd"))
#: kernels whose round trips the model must charge as the SASS shows (resident W_hh in several pieces)
MODEL_CASES = (("lstm", "bf16", 16, 768, "fwd"), ("gru", "bf16", 16, 768, "bwd"), ("lstm", "bf16", 16, 768, "bwd"),
               ("rnn_tanh", "bf16", 16, 768, "bwd"), ("rnn_tanh", "fp32", 16, 768, "fwd"),
               ("lstm", "fp32", 1, 256, "fwd"), ("lstm", "fp32", 8, 128, "fwd"), ("gru", "fp32", 8, 128, "bwd"))
#: compiled in the default run too (tests/support/sampling.py: the others are full_only)
TRITON_DEFAULT = (("lstm", "bf16", 1, 256, "fwd"), ("rnn_tanh", "bf16", 1, 256, "fwd"), ("lstm", "bf16", 8, 128, "fwd"),
                  ("gru_reset_before", "bf16", 8, 128, "fwd"), ("lstm" + REGULARISED, "bf16", 8, 128, "fwd"),
                  MULTI_TILE_ROWS[0], SPILL_FREE[0])
CUDA_CASES = tuple((cell, dtype, B, H, d) for cell in CELLS for dtype in DTYPES for B, H in ANCHORS
                   for d in ("fwd", "bwd"))


def _param(backend, case):
    key = (backend,) + case
    marks = [pytest.mark.xfail(strict=True, reason=AWAITING)] if key in OVER_TODAY else []
    if backend == "triton" and case not in TRITON_DEFAULT:
        marks.append(pytest.mark.full_only)
    return pytest.param(case, id="-".join(map(str, case)), marks=marks)


def _with_masks(case):
    """(the plain kernel's case, its kernel with zoneout and recurrent dropout)."""
    return case, (case[0] + REGULARISED,) + case[1:]


@pytest.fixture(scope="module")
def triton_paths(request):
    """{case: counts} of the TRITON_CASES this run selected, from one subprocess (the
    interpreter cannot compile)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    mine = [i for i in request.session.items if i.path == request.path and hasattr(i, "callspec")]
    selected = {i.callspec.params["case"] for i in mine if "case" in i.callspec.params}
    # a multi-tile row with its regularised kernel
    selected |= {c for i in mine if "row" in i.callspec.params for c in _with_masks(i.callspec.params["row"])}
    if any(i.originalname == "test_the_model_charges_the_round_trips_of_resident_pieces" for i in request.session.items):
        selected |= set(MODEL_CASES)
    every = dict.fromkeys(TRITON_CASES + tuple(c for r in MULTI_TILE_ROWS for c in _with_masks(r)) + SPILL_FREE)
    cases = [c for c in every if c in selected or c == TRITON_DEFAULT[0]]  # [0]: the reader test's
    args = [a for c in cases for a in ("triton",) + tuple(map(str, c))]
    proc = subprocess.run([sys.executable, "-m", "tools.compile_check.critical_path", "--loads", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = {}
    for line in proc.stdout.splitlines():
        d = json.loads(line)
        cell = d["cell"] + (REGULARISED if d["regularised"] else "")
        out[(cell, d["dtype"], d["B"], d["H"], d["direction"])] = d
    return out


@pytest.fixture(scope="module")
def cuda_paths():
    pytest.importorskip("fusedrnn._C", reason="the CUDA extension is not built (no nvcc)")
    from tools.compile_check import critical_path
    return {c: critical_path.path("cuda", *c) for c in CUDA_CASES}


def _check(d):
    assert d["round_trips"] <= d["allowed"], (
        f"{d['backend']} {d['cell']}{REGULARISED if d.get('regularised') else ''} {d['dtype']} B{d['B']} H{d['H']} "
        f"{d['direction']} ({d['launch']}): "
        f"{d['round_trips']} dependent round trips per step, {d['allowed']} allowed")


@pytest.mark.parametrize("case", [_param("triton", c) for c in TRITON_CASES])
def test_triton_step_round_trips(triton_paths, case):
    _check(triton_paths[case])


@pytest.mark.parametrize("row", [pytest.param(r, id="-".join(map(str, r)),
                                              marks=[] if r in TRITON_DEFAULT else [pytest.mark.full_only])
                                 for r in MULTI_TILE_ROWS])
def test_the_masks_add_no_round_trip_to_the_multi_tile_layouts(triton_paths, row):
    """Several tiles per program (B256·H512, over the one-exchange allowance with or without
    masks: a streamed W_hh's chunks per tile): the kernel with every mask of zoneout and
    recurrent dropout takes the plain kernel's round trips per step (it took 4 more forward and
    2-4 backward, each tile's masks loaded after its product's loop), and spills nothing."""
    plain, reg = (triton_paths[c] for c in _with_masks(row))
    assert plain["launch"] == reg["launch"] and re.search(r"bn\d+x[2-9]", reg["launch"]), (plain["launch"],
                                                                                           reg["launch"])
    assert reg["round_trips"] <= plain["round_trips"], (reg["round_trips"], plain["round_trips"])
    assert reg["spill"] == plain["spill"] == 0, (reg["spill"], plain["spill"])


@pytest.mark.parametrize("case", [pytest.param(c, id="-".join(map(str, c)),
                                               marks=[] if c in TRITON_DEFAULT else [pytest.mark.full_only])
                                  for c in SPILL_FREE])
def test_triton_kernel_spills_nothing(triton_paths, case):
    """The reset-before GRU's backward at B8·H256 (no anchor, so no compile gate's spill check):
    its resident pieces covered all three gates' rows (a third of them zeros, the n gate's rows
    held again in a piece of their own) and spilled 24 bytes plain, 8 with the masks."""
    d = triton_paths[case]
    assert d["spill"] == 0, (case, d["launch"], d["regs"], d["spill"])
    assert d["launch"].startswith("grid") and "res1x512" in d["launch"], d["launch"]


@pytest.mark.parametrize("case", [_param("cuda", c) for c in CUDA_CASES])
def test_cuda_step_round_trips(cuda_paths, case):
    _check(cuda_paths[case])


#: the CUDA regularised passes (zoneout and recurrent dropout: csrc/passes.cuh FwdRegPass,
#: BwdRegPass) at the B8·H128 anchor, every cell, both directions
CUDA_REGULARISED = tuple((cell, "bf16", 8, 128, d) for cell in CELLS if cell not in cuda_rows.NO_MASKS
                         for d in ("fwd", "bwd"))


@pytest.mark.parametrize("case", CUDA_REGULARISED, ids=lambda c: "-".join(map(str, c)))
def test_the_masks_add_no_round_trip_to_the_cuda_kernels(case):
    """The regularised kernel loads the step's zoneout masks with its other inputs, two steps ahead,
    and keeps the dropout mask in a register: its round trips are the plain kernel's, and it spills
    only what the compile gate records (the LSTM and GRU backward)."""
    pytest.importorskip("fusedrnn._C", reason="the CUDA extension is not built (no nvcc)")
    from tools.compile_check import critical_path
    plain = critical_path.path("cuda", *case)
    reg = critical_path.path("cuda", case[0] + REGULARISED, *case[1:])
    _check(reg)
    from test_cuda_compile_gate import REGULARISED_SPILLS  # the spills recorded there, exactly
    assert reg["spill"] == REGULARISED_SPILLS.get((case[0], case[4], case[1]), 0), reg["spill"]
    assert reg["launch"] == plain["launch"], (reg["launch"], plain["launch"])
    assert reg["round_trips"] <= plain["round_trips"], (reg["round_trips"], plain["round_trips"])


def test_cuda_inputs_are_loaded_two_steps_ahead(cuda_paths):
    """The CUDA persistent kernel loads a step's inputs two steps before it (csrc/persistent.cuh):
    where no flag is polled (the cta and cluster tiers) that load is the step's only dependent
    one, consumed one trip of the two-step loop after its issue: half a round trip per step
    (one step ahead, each step waited for the load the step before issued: 1). The reset-before
    GRU's two-stage passes (csrc/passes_reset.cuh) load one step ahead, as the projection's do:
    1, within its allowance of 4."""
    inside = {c: d["round_trips"] for c, d in cuda_paths.items() if d["launch"].split()[0] in ("cta", "cluster")}
    one_stage = {c: rt for c, rt in inside.items() if c[0] != "gru_reset_before"}
    assert len(one_stage) >= 48, one_stage  # B8·H128 and B1·H256 in every cell, dtype and direction at least
    assert {c: rt for c, rt in one_stage.items() if rt != 0.5} == {}
    assert {c: rt for c, rt in inside.items() if c[0] == "gru_reset_before" and rt != 1} == {}


def test_the_reader_on_a_real_triton_kernel(triton_paths):
    """The compiled forward of the LSTM at B1·H256 (grid layout, W_hh resident in one piece of
    256, h exchanged through L2, atomic-counter grid barrier): the step loop holds the
    barrier's poll (a flag round trip), the exchange's loads, and one accumulator chain of
    2 x 256 / 16 = 32 mma.sync (hi and lo halves of h)."""
    d = triton_paths[("lstm", "bf16", 1, 256, "fwd")]
    assert d["launch"].startswith("grid") and "res1x256" in d["launch"]
    assert d["mma_chain"] == 32 and d["mma"] >= 32
    assert d["flag_round_trips"] == 1 and 2 <= d["round_trips"] <= 4
    assert any(op.startswith("LDG") and ".STRONG" in op and flag for _, op, _, flag in d["loads"])
    assert d["barriers"] >= 2 and 200 < d["insts_per_step"] < 5000


def test_the_cta_layout_exchanges_nothing(triton_paths):
    """The RNN at B1·H256 runs in one program (cta: all units, W_hh resident, 8 batch rows):
    its step has no flag to poll and no exchange load; the one round trip is the wait for a
    step's input, loaded two steps before its use (the step loop unrolled by two): one L2
    latency per two steps, model.CTA_PREFETCH_TRIPS. (Loaded one step ahead and converted to
    fp32 at once, as before, it read 1.)"""
    from fusedrnn.ops.triton import model
    d = triton_paths[("rnn_tanh", "bf16", 1, 256, "fwd")]
    assert d["launch"].startswith("cta bb8") and d["spill"] == 0
    assert d["flag_round_trips"] == 0 and d["round_trips"] == model.CTA_PREFETCH_TRIPS == 0.5
    assert not any(".STRONG" in op for _, op, _, _ in d["loads"])


def test_the_reset_before_gru_is_allowed_one_exchange_more():
    """Its step exchanges twice (the n gate's product needs r ⊙ h_{t-1} of every unit), so its
    budget is two exchanges' flag and data; the other cells keep one exchange's."""
    from tools.compile_check.critical_path import ROUND_TRIPS_ALLOWED, exchanges
    assert exchanges("gru_reset_before") == 2 and ROUND_TRIPS_ALLOWED == 2
    assert {exchanges(c) for c in CELLS if c != "gru_reset_before"} == {1}


@pytest.mark.full_only
def test_the_masks_add_no_round_trip_to_the_projection():
    """The LSTM with a projection (P = H/4) at B8·H128: its kernels with zoneout and recurrent
    dropout take no more dependent round trips per step than without (the projection's own path
    is over the two-exchange allowance today, forward 5 and backward 13: issue 29's kernel work),
    and do not spill."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    args = [a for cell in ("lstm", "lstm" + REGULARISED) for d in ("fwd", "bwd")
            for a in ("triton", cell, "bf16", "8", "128", d)]
    proc = subprocess.run([sys.executable, "-m", "tools.compile_check.critical_path", "--proj", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {(d["regularised"], d["direction"]): d for d in map(json.loads, proc.stdout.splitlines())}
    assert len(rows) == 4 and all(d["proj"] == 32 and d["allowed"] == 4 for d in rows.values())
    for direction in ("fwd", "bwd"):
        plain, reg = rows[False, direction], rows[True, direction]
        assert reg["round_trips"] <= plain["round_trips"], (direction, reg["round_trips"], plain["round_trips"])
        assert reg["spill"] == 0, (direction, reg["spill"])


def test_force_names_only_launch_fields():
    """--force (a configuration the choice code does not pick, compiled to read its path)
    takes FIELD=VALUE pairs of the launch and refuses anything else by name."""
    from tools.compile_check.critical_path import parse_force
    assert parse_force("BLOCK_N=8,KP=256,NKP=3,RESIDENT=1,num_warps=4") == dict(
        BLOCK_N=8, KP=256, NKP=3, RESIDENT=True, num_warps=4)
    for bad in ("grid=3", "BLOCK_N", ""):
        with pytest.raises(ValueError, match="--force"):
            parse_force(bad)


@pytest.mark.full_only
def test_the_model_charges_the_round_trips_of_resident_pieces(triton_paths, monkeypatch):
    """Issue 29: the choice code's model charged one round trip per resident piece; compiled
    for sm_90, a W_hh resident in several pieces waits for the poll, the first piece, then
    every later piece's loads together. The model's count for the launch config.choose picks
    must be the one read from its SASS (LSTM B16·H768 forward: 3 pieces in one sweep of loads,
    each behind the last load; backward, split in K:
    the GRU's 9 in one sweep of loads, every piece behind the last load, the LSTM's 12 in two
    sweeps); an fp32 forward's narrow pieces load in one sweep (LSTM B1·H256: 2 pieces of 128,
    B8·H128: 4 of 32), as do an fp32 backward's split pieces (GRU B8·H128: 3 of 128)."""
    import torch

    from fusedrnn.ops.triton import config, model
    monkeypatch.setattr(config, "INTERPRET", False)
    monkeypatch.setitem(config.TUNING, "layout", "auto")
    for cell, dtype, B, H, direction in MODEL_CASES:
        d = triton_paths[(cell, dtype, B, H, direction)]
        bits = 32 if dtype == "fp32" else 16
        lau = config.choose(cell, B, H, torch.float32 if bits == 32 else torch.bfloat16, config.H100, direction)
        assert lau.RESIDENT and lau.NKP > 1 and f"res{lau.NKP}x{lau.KP}" in d["launch"], (lau, d["launch"])
        G, GS = config.GATES[config.CELLS[cell]], config.gate_slots(cell)
        m_rows = GS * lau.BLOCK_N if direction == "fwd" else lau.BLOCK_N
        charged = model.step_us(lau.layout, lau.grid[0], lau.N_TILES, lau.BLOCK_N, lau.BLOCK_B, GS, lau.KP, lau.NKP,
                                lau.RESIDENT, B, H, G, bits, direction,
                                config.uses_wgmma(m_rows, lau.BLOCK_B, lau.num_warps),
                                warps=lau.num_warps, split=lau.SPLIT)["round_trips"]
        assert charged == d["round_trips"] and d["spill"] == 0, (cell, direction, charged, d["round_trips"], d["spill"])
