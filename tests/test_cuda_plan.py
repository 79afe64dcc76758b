"""The CUDA plan (csrc/plan.cpp) is a pure host function of the problem and the device's
limits: pinned here at the anchor shapes for an H100, for every cell, dtype and
direction, and checked for what must hold everywhere (fits in shared memory, a flag grid
is co-resident, clusters within the device's limit, every unit and row covered).
No GPU: the GPU path reads the same limits off the device and calls the same function."""
import pytest
import torch

from fusedrnn.ops.cuda import CUDA_GATES as GATES  # the cells the CUDA kernels implement
from fusedrnn.ops import cuda as cuda_ops

C = pytest.importorskip("fusedrnn._C", reason="the CUDA extension is not built (no nvcc)")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ANCHORS = ((1, 256), (8, 128), (16, 768), (64, 1024), (256, 512))
H100 = cuda_ops.H100_LIMITS

# tier:units_per_CTA x CTAs_per_group:rows_per_group x groups, per anchor (B, H) in order
PINNED = {
    # from the plan of this commit; a change of the plan or of its cost model shows here
    # (issue 29: the machine model of fusedrnn/machine.py, 32-cycle dependent mma, 3 for fp32)
    ("gru", "bf16", "fwd"): "cluster:16x16:8x1 cluster:16x8:8x1 grid:16x48:8x2 grid:16x64:32x2 cluster:32x16:32x8",
    ("gru", "bf16", "bwd"): "cluster:16x16:8x1 cluster:16x8:8x1 grid:32x24:8x2 grid:16x64:32x2 cluster:32x16:16x16",
    ("gru", "fp16", "fwd"): "cluster:16x16:8x1 cluster:16x8:8x1 grid:16x48:8x2 grid:16x64:32x2 cluster:32x16:32x8",
    ("gru", "fp16", "bwd"): "cluster:16x16:8x1 cluster:16x8:8x1 grid:32x24:8x2 grid:16x64:32x2 cluster:32x16:16x16",
    ("gru", "fp32", "fwd"): "cluster:16x16:8x1 cluster:8x16:8x1 grid:16x48:8x2 grid:8x128:64x1 grid:16x32:64x4",
    ("gru", "fp32", "bwd"): "cluster:32x8:8x1 cluster:32x4:8x1 grid:16x48:8x2 grid:16x64:32x2 grid:16x32:64x4",
    # the GRU with its reset gate before the product: two stages a step (csrc/passes_reset.cuh)
    ("gru_reset_before", "bf16", "fwd"): "cluster:16x16:8x1 cluster:16x8:8x1 grid:16x48:8x2 grid:16x64:32x2 cluster:32x16:32x8",
    ("gru_reset_before", "bf16", "bwd"): "cluster:16x16:8x1 cta:128x1:8x1 grid:32x24:8x2 grid:16x64:32x2 cluster:32x16:32x8",
    ("gru_reset_before", "fp16", "fwd"): "cluster:16x16:8x1 cluster:16x8:8x1 grid:16x48:8x2 grid:16x64:32x2 cluster:32x16:32x8",
    ("gru_reset_before", "fp16", "bwd"): "cluster:16x16:8x1 cta:128x1:8x1 grid:32x24:8x2 grid:16x64:32x2 cluster:32x16:32x8",
    ("gru_reset_before", "fp32", "fwd"): "cluster:16x16:8x1 cluster:16x8:8x1 grid:16x48:8x2 grid:8x128:64x1 grid:16x32:64x4",
    ("gru_reset_before", "fp32", "bwd"): "cluster:32x8:8x1 cluster:32x4:8x1 grid:16x48:8x2 grid:16x64:32x2 grid:16x32:64x4",
    ("lstm", "bf16", "fwd"): "cluster:16x16:8x1 cluster:8x16:8x1 grid:16x48:8x2 grid:16x64:32x2 cluster:32x16:32x8",
    ("lstm", "bf16", "bwd"): "cluster:16x16:8x1 cluster:16x8:8x1 grid:16x48:8x2 grid:16x64:32x2 cluster:32x16:8x32",
    ("lstm", "fp16", "fwd"): "cluster:16x16:8x1 cluster:8x16:8x1 grid:16x48:8x2 grid:16x64:32x2 cluster:32x16:32x8",
    ("lstm", "fp16", "bwd"): "cluster:16x16:8x1 cluster:16x8:8x1 grid:16x48:8x2 grid:16x64:32x2 cluster:32x16:8x32",
    ("lstm", "fp32", "fwd"): "cluster:16x16:8x1 cluster:8x16:8x1 grid:16x48:8x2 grid:8x128:64x1 grid:16x32:64x4",
    # B64·H1024: 8 units of W_hhᵀ per CTA kept unpadded (8 rows, 131 KB; padded to 16, 262 KB)
    ("lstm", "fp32", "bwd"): "cluster:32x8:8x1 cluster:32x4:8x1 grid:16x48:8x2 grid:8x128:64x1 grid:16x32:64x4",
    ("rnn_relu", "bf16", "fwd"): "cluster:16x16:8x1 cta:128x1:8x1 cluster:48x16:8x2 cluster:64x16:8x8 cluster:64x8:16x16",
    ("rnn_relu", "bf16", "bwd"): "cluster:16x16:8x1 cta:128x1:8x1 cluster:48x16:8x2 cluster:64x16:8x8 cluster:64x8:16x16",
    ("rnn_relu", "fp16", "fwd"): "cluster:16x16:8x1 cta:128x1:8x1 cluster:48x16:8x2 cluster:64x16:8x8 cluster:64x8:16x16",
    ("rnn_relu", "fp16", "bwd"): "cluster:16x16:8x1 cta:128x1:8x1 cluster:48x16:8x2 cluster:64x16:8x8 cluster:64x8:16x16",
    ("rnn_relu", "fp32", "fwd"): "cluster:32x8:8x1 cta:128x1:8x1 grid:32x24:8x2 grid:32x32:16x4 cluster:64x8:16x16",
    ("rnn_relu", "fp32", "bwd"): "cluster:32x8:8x1 cta:128x1:8x1 grid:32x24:8x2 grid:32x32:16x4 cluster:64x8:16x16",
    ("rnn_tanh", "bf16", "fwd"): "cluster:16x16:8x1 cta:128x1:8x1 cluster:48x16:8x2 cluster:64x16:8x8 cluster:64x8:16x16",
    ("rnn_tanh", "bf16", "bwd"): "cluster:16x16:8x1 cta:128x1:8x1 cluster:48x16:8x2 cluster:64x16:8x8 cluster:64x8:16x16",
    ("rnn_tanh", "fp16", "fwd"): "cluster:16x16:8x1 cta:128x1:8x1 cluster:48x16:8x2 cluster:64x16:8x8 cluster:64x8:16x16",
    ("rnn_tanh", "fp16", "bwd"): "cluster:16x16:8x1 cta:128x1:8x1 cluster:48x16:8x2 cluster:64x16:8x8 cluster:64x8:16x16",
    ("rnn_tanh", "fp32", "fwd"): "cluster:32x8:8x1 cta:128x1:8x1 grid:32x24:8x2 grid:32x32:16x4 cluster:64x8:16x16",
    ("rnn_tanh", "fp32", "bwd"): "cluster:32x8:8x1 cta:128x1:8x1 grid:32x24:8x2 grid:32x32:16x4 cluster:64x8:16x16",
}


def short(p: dict) -> str:
    if p["tier"] == "step":
        return "step"
    L = p["layout"]
    return f"{p['tier']}:{L['U']}x{L['NU']}:{L['BG']}x{L['NBG']}"


def plan(cell, dt, B, H, bwd, limits=H100, **kw):
    return cuda_ops.plan_for(cell, DTYPES[dt], B, H, limits, backward=bwd, **kw)


@pytest.mark.parametrize("key", sorted(PINNED))
def test_plan_is_pinned_at_the_anchors(key):
    cell, dt, direction = key
    got = " ".join(short(plan(cell, dt, B, H, direction == "bwd")) for B, H in ANCHORS)
    assert got == PINNED[key]


def test_every_anchor_case_is_pinned():
    assert set(PINNED) == {(c, d, x) for c in GATES for d in DTYPES for x in ("fwd", "bwd")}


@pytest.mark.parametrize("dt", ["bf16", "fp16"])
@pytest.mark.parametrize("cell", sorted(GATES))
def test_sixteen_bit_anchors_are_persistent_in_both_directions(cell, dt):
    for B, H in ANCHORS:
        for bwd in (False, True):
            p = plan(cell, dt, B, H, bwd)
            assert p["persistent"], (cell, dt, B, H, bwd, p["reason"])


def rows_ok(RP, rows):
    """A stage's weight rows: whole m-tiles of 16, or the real rows in 8s (an unpadded slice)."""
    return RP >= rows and (RP % 16 == 0 and RP - rows < 16 or RP % 8 == 0 and RP - rows < 8)


def check_invariants(cell, dt, B, H, bwd, p, limits=H100):
    G, e = GATES[cell], (4 if dt == "fp32" else 2)
    assert p["ok"]
    assert p["workspace_bytes"] >= 2 * B * H * (e + 4)  # the per-step fallback's buffers are always there
    if p["tier"] == "step":
        assert p["reason"]
        s = p["step"]
        assert s["grid_x"] * s["units"] >= H and s["grid_y"] * s["rows"] >= B and s["grid_y"] <= 65535
        return
    L = p["layout"]
    assert p["smem_bytes"] == L["smem"] <= limits["smem_optin"] - 1024
    assert L["U"] % (16 // e) == 0 and L["U"] * L["NU"] == L["Hp"] >= H > (L["NU"] - 1) * L["U"]
    assert L["BG"] % 8 == 0 and L["BG"] * L["NBG"] == L["Bp"] >= B > (L["NBG"] - 1) * L["BG"]
    if cell == "gru_reset_before":
        check_two_stage_invariants(dt, B, bwd, p, limits)
        return
    assert L["K"] == (G if bwd else 1) * L["Hp"] and L["Kp"] % (32 // e) == 0 and L["Kp"] >= L["K"]
    assert rows_ok(L["RP"], (1 if bwd else G) * L["U"])
    assert L["ppt"] * 256 >= L["U"] * min(L["BG"], B) and L["ppt"] <= 4
    assert L["KS"] >= 1 and L["WM"] in (1, 2) and L["WN"] in (1, 2, 4)
    assert (L["lda"] * e) % 128 in (16, 48, 80, 112) and (L["ldx"] * e) % 16 == 0
    assert L["ldp"] % 32 == 4
    assert p["grid"] == L["NU"] * L["NBG"]
    regions = sorted((L[k], k) for k in ("off_a", "off_x", "off_bias", "off_stage", "off_part"))
    assert regions[0] == (0, "off_a") and all(off % 128 == 0 for off, _ in regions)
    # each region holds what the kernel (csrc/persistent.cuh, exchange.cuh) puts there
    assert L["nx"] == (1 if p["tier"] == "grid" and L["NP"] == 1 else 2)  # two rounds, or two passes
    width = L["CPP"] * L["U"] if L["NP"] > 1 else L["Kp"]
    assert L["ldx"] >= width + 16 // e and L["lda"] >= L["Kp"] + 16 // e
    assert L["off_x"] - L["off_a"] >= L["RP"] * L["lda"] * e
    assert L["off_bias"] - L["off_x"] >= L["nx"] * L["BG"] * L["ldx"] * e
    assert L["off_stage"] - L["off_bias"] >= (0 if bwd else L["RP"] * 4)
    assert L["off_part"] - L["off_stage"] >= ((G if bwd else 1) * L["BG"] * L["U"] * e if p["tier"] == "cluster" else 0)
    assert L["smem"] - L["off_part"] >= L["KS"] * L["BG"] * L["ldp"] * 4
    if p["tier"] == "grid":
        assert p["cooperative"] and p["grid"] <= limits["sms"]  # one CTA per SM: all co-resident
        assert L["NP"] * L["CPP"] >= (G if bwd else 1) * L["NU"] > (L["NP"] - 1) * L["CPP"]
        assert L["NP"] == 1 or L["U"] % (32 // e) == 0
    else:
        assert L["NP"] == 1 and not p["cooperative"]
    if p["tier"] == "cluster":
        assert 1 <= p["cluster"] == L["NU"] <= limits["max_cluster"]
    if p["tier"] == "cta":
        assert L["NU"] == 1 and p["cluster"] == 0


def check_two_stage_invariants(dt, B, bwd, p, limits):
    """The GRU with its reset gate before the product (csrc/passes_reset.cuh): two stages a step,
    both over the H-units; forward W_hr,z h (2 weight rows a unit) then W_hn (r ⊙ h), backward
    W_hr,zᵀ [dr, dz] (X of 2 segments) then W_hnᵀ d(n_pre). Per stage what check_invariants
    asks of the one stage of the other cells, and the regions of both stages in order."""
    L, e = p["layout"], (4 if dt == "fp32" else 2)
    shapes = [(1, 2), (1, 1)] if bwd else [(2, 1), (1, 1)]  # (weight rows per unit, X segments)
    assert L["nst"] == 2 and p["grid"] == L["NU"] * L["NBG"]
    regions = []
    for st, (rpu, nseg) in zip(L["stages"], shapes, strict=True):
        assert st["cw"] == L["U"] and st["nseg"] == nseg and st["rows"] == L["U"]
        assert st["K"] == nseg * L["Hp"] and st["Kp"] % (32 // e) == 0 and st["Kp"] >= st["K"]
        assert rows_ok(st["RP"], rpu * L["U"])
        assert st["ppt"] * 256 >= L["U"] * min(L["BG"], B) and st["ppt"] <= 4
        assert st["KS"] >= 1 and st["WM"] in (1, 2) and st["WN"] in (1, 2, 4) and st["ldp"] % 32 == 4
        assert st["nx"] == (2 if p["tier"] == "grid" and st["NP"] > 1 else 1)  # two stages: a buffer each
        width = st["CPP"] * L["U"] if st["NP"] > 1 else st["Kp"]
        assert st["ldx"] >= width + 16 // e and st["lda"] >= st["Kp"] + 16 // e
        assert L["Kx"] >= st["Kp"] and L["smem"] - L["off_part"] >= st["KS"] * L["BG"] * st["ldp"] * 4
        if p["tier"] != "grid":
            assert st["NP"] == 1
        regions += [(st["off_a"], st["RP"] * st["lda"] * e), (st["off_x"], st["nx"] * L["BG"] * st["ldx"] * e)]
    st0, st1 = L["stages"]
    bias = 0 if bwd else (st0["RP"] + st1["RP"]) * 4  # b_hr, b_hz at stage 0's rows, b_hn after them
    staging = sum(n * L["BG"] * L["U"] * e for _, n in shapes) if p["tier"] == "cluster" else 0
    regions = sorted(regions) + [
        (L["off_bias"], bias), (L["off_stage"], staging), (L["off_part"], 0)]
    assert regions[0][0] == 0 and all(off % 128 == 0 for off, _ in regions)
    for (off, size), (nxt, _) in zip(regions, regions[1:]):
        assert nxt - off >= size, regions
    if p["tier"] == "grid":
        assert p["cooperative"] and p["grid"] <= limits["sms"]
    if p["tier"] == "cluster":
        assert 1 <= p["cluster"] == L["NU"] <= limits["max_cluster"]
    if p["tier"] == "cta":
        assert L["NU"] == 1 and p["cluster"] == 0


@pytest.mark.parametrize("dt", sorted(DTYPES))
@pytest.mark.parametrize("cell", sorted(GATES))
def test_invariants_over_the_sweep(cell, dt):
    for B in (1, 3, 8, 16, 64, 256, 1024, 4096):
        for H in (1, 33, 128, 256, 512, 768, 1000, 1024, 2048):
            for bwd in (False, True):
                check_invariants(cell, dt, B, H, bwd, plan(cell, dt, B, H, bwd))


@pytest.mark.parametrize("mode", ["cta", "cluster", "grid", "step"])
def test_every_tier_can_be_forced_at_a_small_odd_size(mode):
    for cell in GATES:
        for dt in DTYPES:
            for bwd in (False, True):
                p = plan(cell, dt, 3, 33, bwd, mode=mode, units=16 if mode in ("cluster", "grid") else 0)
                assert p["ok"] and p["tier"] == mode, (cell, dt, bwd, p["reason"])
                check_invariants(cell, dt, 3, 33, bwd, p)
                if mode in ("cluster", "grid"):
                    assert p["layout"]["NU"] == 3  # 33 units over CTAs of 16: the exchange is exercised


def test_forced_batch_groups_and_passes():
    p = plan("lstm", "bf16", 37, 40, True, mode="grid", units=16, batch_rows=8)
    assert p["layout"]["NBG"] == 5 and p["layout"]["NU"] == 3 and p["layout"]["BG"] == 8
    check_invariants("lstm", "bf16", 37, 40, True, p)
    p = plan("lstm", "bf16", 64, 1024, True)  # K = 4H: X is streamed through smem in passes
    assert p["tier"] == "grid" and p["layout"]["NP"] > 1, p
    for dt in DTYPES:  # the streaming path can be forced at small sizes (the GPU tests do)
        p = plan("gru", dt, 3, 33, True, mode="grid", units=16, passes=2)
        assert p["layout"]["NP"] == 2 and p["layout"]["CPP"] == 5, p
        check_invariants("gru", dt, 3, 33, True, p)


def test_forced_tier_that_cannot_run_says_why():
    p = plan("lstm", "fp32", 8, 1024, False, mode="cta")
    assert not p["ok"] and p["tier"] == "step" and "one CTA: more than 1024 (unit, batch row) pairs" in p["reason"]
    p = plan("lstm", "fp32", 1, 1024, False, mode="cta")
    assert not p["ok"] and "one CTA: needs at least" in p["reason"] and "the device offers 227 KB" in p["reason"]
    p = plan("lstm", "bf16", 1, 4096, False, mode="cluster")
    assert not p["ok"] and "a cluster: needs at least" in p["reason"]


def test_unpadded_slice_where_the_padded_one_fits_nowhere():
    """The LSTM fp32 backward at B64·H1024: 8 units of W_hhᵀ per CTA (K = 4096) are 262 KB padded
    to an m-tile of 16 rows, past the H100's 227 KB, so it ran per step; kept as its 8 rows
    (131 KB) it runs on the grid, one CTA per SM, K streamed in passes. No other anchor plan
    changes: padded slices stay wherever they fit (PINNED, and the unpadded ones listed here)."""
    p = plan("lstm", "fp32", 64, 1024, True)
    L = p["layout"]
    assert p["tier"] == "grid" and p["cooperative"] and p["grid"] == 128 <= H100["sms"], p
    assert L["U"] == 8 and L["RP"] == 8 and L["NBG"] == 1 and L["NP"] > 1, L
    assert L["off_x"] - L["off_a"] == 8 * L["lda"] * 4 and 16 * L["lda"] * 4 > H100["smem_optin"]  # padded: no fit
    check_invariants("lstm", "fp32", 64, 1024, True, p)
    unpadded = [(cell, dt, B, H, bwd) for cell in GATES for dt in DTYPES for B, H in ANCHORS for bwd in (False, True)
                if any(st["RP"] % 16 for st in plan(cell, dt, B, H, bwd).get("layout", {}).get("stages", []))]
    assert unpadded == [("lstm", "fp32", 64, 1024, True)]


def test_auto_falls_back_to_per_step_where_nothing_fits():
    p = plan("lstm", "fp32", 4, 4096, False)
    assert p["ok"] and p["tier"] == "step" and "the grid" in p["reason"]


def test_device_limits_decide_the_tiers():
    a100 = dict(H100, sms=108, smem_optin=163 * 1024, smem_per_sm=164 * 1024, cc_major=8, max_cluster=0)
    for B, H in ANCHORS:
        for bwd in (False, True):
            p = plan("lstm", "bf16", B, H, bwd, limits=a100)
            assert p["tier"] != "cluster"
            check_invariants("lstm", "bf16", B, H, bwd, p, limits=a100)
    no_coop = dict(H100, cooperative=0)
    assert plan("lstm", "bf16", 16, 768, False, limits=no_coop)["tier"] != "grid"
    volta = dict(H100, cc_major=7)
    p = plan("gru", "bf16", 8, 128, False, limits=volta)
    assert p["tier"] == "step" and "sm_80" in p["reason"]


def test_clusters_the_kernel_cannot_hold_fall_back_to_smaller_clusters():
    """max_active_cluster pins the device's occupancy answer for the real kernel: where 16-CTA
    clusters do not fit, the plan takes clusters of at most 8 (not per-step kernels) and says why;
    where not even those fit, no cluster at all."""
    for B, H, bwd in ((1, 256, False), (1, 256, True), (8, 128, False)):
        full = plan("lstm", "bf16", B, H, bwd)
        assert full["tier"] == "cluster" and full["cluster"] == 16
        for fit in (8, 4):
            p = plan("lstm", "bf16", B, H, bwd, max_active_cluster=fit)
            assert p["ok"] and p["tier"] == "cluster" and p["cluster"] <= fit, p
            assert "clusters of 16 CTAs do not fit" in p["reason"], p["reason"]
            assert fit != 8 or "limited to 8 CTAs" in p["reason"], p["reason"]
            check_invariants("lstm", "bf16", B, H, bwd, p, limits=dict(H100, max_cluster=8))
        p = plan("lstm", "bf16", B, H, bwd, max_active_cluster=1)
        assert p["tier"] in ("grid", "cta", "step") and "no cluster was planned" in p["reason"], p
    assert plan("lstm", "bf16", 1, 256, False, max_active_cluster=16) == plan("lstm", "bf16", 1, 256, False)
    # the same plan as a device whose limit is 8 CTAs per cluster
    small = plan("lstm", "bf16", 1, 256, False, limits=dict(H100, max_cluster=8))
    assert short(small) == short(plan("lstm", "bf16", 1, 256, False, max_active_cluster=8))


def test_plan_for_rejects_bad_limits_and_values():
    with pytest.raises(ValueError, match="limits lack 'sms'"):
        C.plan_for(False, "lstm", 2, 8, 128, {"smem_optin": 1})
    with pytest.raises(ValueError, match="unknown mode"):
        plan("lstm", "bf16", 8, 128, False, mode="fast")
    with pytest.raises(ValueError, match="int32 range"):
        plan("lstm", "bf16", 1, 2**30, False)


def test_estimates_are_filled():
    for B, H in ANCHORS:
        e = plan("lstm", "bf16", B, H, False)["estimate"]
        assert 0 < e["step_us"] < 50 and e["waves"] >= 1
        assert e["step_us"] >= e["sync_us"] + e["compute_us"] - 1e-9 or e["step_us"] >= e["io_us"]


def test_explain_names_the_tier_of_each_direction(monkeypatch):
    """fusedrnn.explain appends the cuda plan (read here from plan_for in place of a device)."""
    import fusedrnn
    from fusedrnn import backends

    monkeypatch.setattr(cuda_ops, "plan", lambda cell, dtype, B, H, backward=False, device=None, **kw:
                        cuda_ops.plan_for(cell, dtype, B, H, backward=backward, **kw))
    rnn = fusedrnn.LSTM(256, 256, backend="cuda")
    monkeypatch.setattr(type(rnn), "choose_backend", lambda self, x, warn=True: backends.Choice("cuda", "requested"))
    text = fusedrnn.explain(rnn, torch.zeros(1024, 1, 256, dtype=torch.bfloat16))
    assert "Plan: forward on the cluster tier" in text and "backward on the cluster tier" in text, text
    assert "16 units per CTA" in text, text


def test_a_calibration_file_reaches_the_cxx_plan(tmp_path, monkeypatch):
    """FUSEDRNN_CALIBRATION changes the C++ plan's predicted cost by what it changes in
    Python's machine model: the grid tier's step carries one flag exchange (flag round trip +
    the L2 load it guards) per stage, the per-step tier one launch per kernel. A file that
    raises those constants raises the C++ estimate by exactly the same difference of
    fusedrnn.machine's values; the launches take the same constants (the knobs)."""
    import json

    from fusedrnn import machine

    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"schema": 1, "constants": {"flag_round_trip_us": 1.9, "l2_latency_us": 0.8,
                                                           "launch_us": 6.1}}))
    monkeypatch.delenv("FUSEDRNN_CALIBRATION", raising=False)
    forced = dict(mode="grid", units=16, batch_rows=8)
    base_grid = cuda_ops.plan_for("lstm", torch.bfloat16, 16, 768, **forced)
    base_step = cuda_ops.plan_for("gru", torch.float32, 16, 768, mode="step")
    monkeypatch.setenv("FUSEDRNN_CALIBRATION", str(path))
    grid = cuda_ops.plan_for("lstm", torch.bfloat16, 16, 768, **forced)
    step = cuda_ops.plan_for("gru", torch.float32, 16, 768, mode="step")
    d, c = machine.DEFAULTS, machine.current()
    assert short(grid) == short(base_grid) and grid["layout"]["nst"] == 1
    want = (c["flag_round_trip_us"] + c["l2_latency_us"]) - (d["flag_round_trip_us"] + d["l2_latency_us"])
    assert grid["estimate"]["sync_us"] - base_grid["estimate"]["sync_us"] == pytest.approx(want, abs=1e-9)
    assert grid["estimate"]["step_us"] - base_grid["estimate"]["step_us"] == pytest.approx(want, abs=1e-9)
    assert step["estimate"]["sync_us"] - base_step["estimate"]["sync_us"] == pytest.approx(
        (c["launch_us"] - d["launch_us"]) * step["step"]["kernels"], abs=1e-9)
    assert cuda_ops._knobs()["machine"] == machine.cxx_constants(machine.load(str(path)))
    # an explicit model wins over the file; the defaults give the uncalibrated plan back
    assert cuda_ops.plan_for("lstm", torch.bfloat16, 16, 768, model=dict(d), **forced) == base_grid


def test_the_binding_checks_the_machine_constants():
    for bad, match in (({"warp_drive_us": 1.0}, "unknown constant 'warp_drive_us'"),
                       ({"l2_latency_us": -1.0}, "'l2_latency_us' must be finite"),
                       ({"launch_us": float("nan")}, "'launch_us' must be finite"),
                       ({"clock_ghz": 0.0}, "must be > 0"), ({"launch_us": "fast"}, "must be a number")):
        with pytest.raises(ValueError, match=match):
            C.plan_for(False, "lstm", 2, 8, 128, dict(H100), machine=bad)
