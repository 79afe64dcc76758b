"""The compile gate's CI shape set for the cuda backend: every launch the plan would issue
on an H100 is compiled for sm_90 (nvcc -Xptxas -v, cached under build/compile_check) and
must exit 0 (no FAIL, SMEM or CORES) with no spill in a 16-bit kernel at an anchor."""
import json

import pytest

from tools.compile_check import __main__ as gate
from tools.compile_check import cuda_rows

pytest.importorskip("fusedrnn._C", reason="the CUDA extension is not built (no nvcc)")


@pytest.fixture(scope="module")
def ci_rows(tmp_path_factory):
    if cuda_rows._nvcc_flags(90)[1] is None:
        pytest.skip("nvcc not found")
    out = tmp_path_factory.mktemp("gate") / "cuda.json"
    rc = gate.main(["--backends", "cuda", "--shapes", "ci", "--quiet", "--json", str(out)])
    with open(out) as f:
        return rc, json.load(f)["rows"]


@pytest.mark.gate
def test_gate_exits_zero(ci_rows):
    rc, rows = ci_rows
    bad = [(r["kernel"], r["cell"], r["dtype"], r["B"], r["H"], r["direction"], r["flags"], r["error"])
           for r in rows if set(r["flags"]) & {"FAIL", "SMEM", "CORES"}]
    assert rc == 0 and not bad, bad


@pytest.mark.gate
def test_no_sixteen_bit_anchor_spills(ci_rows):
    _, rows = ci_rows
    spills = [(r["cell"], r["dtype"], r["B"], r["H"], r["direction"], r["spill_bytes"])
              for r in rows if r["anchor"] and r["dtype"] in ("bf16", "fp16") and r["spill_bytes"]]
    assert not spills, spills


@pytest.mark.gate
def test_rows_cover_every_case_and_both_directions(ci_rows):
    _, rows = ci_rows
    base = [r for r in rows if r["variant"] in ("any", "per-step")]
    keys = {(r["cell"], r["dtype"], r["B"], r["H"], r["direction"]) for r in base}
    assert len(base) == len(keys) == 5 * 3 * 9 * 2  # cells x dtypes x (5 anchors + 4 edges) x directions
    for r in rows:
        assert r["regs"] and r["regs"] <= 255 and r["threads"] == 256
        if r["variant"] == "any":  # the persistent kernel: tensor cores, the plan's tier in the layout
            assert r["tensor_cores"] in ("mma", "wgmma", "?"), r
            assert r["layout"].split()[0] in ("cta", "cluster", "grid"), r
            assert r["barrier"] == (r["layout"].split()[0] == "grid")
    tiers = {r["layout"].split()[0] for r in rows}
    assert {"cta", "cluster", "grid"} <= tiers, tiers


def test_ptxas_log_parser():
    log = """ptxas info    : Compiling entry function '_ZN8fusedrnn1kE' for 'sm_90'
ptxas info    : Function properties for _ZN8fusedrnn1kE
    32 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 191 registers, used 1 barriers, 32 bytes cumulative stack size, 128 bytes smem
"""
    assert cuda_rows.parse_ptxas(log) == {"_ZN8fusedrnn1kE": dict(regs=191, spill=12, stack=32, static_smem=128)}
    assert cuda_rows.kernel_key("void fusedrnn::persistent_kernel<fusedrnn::BwdPass<fusedrnn::RnnCell<true>, "
                                "__half> >(fusedrnn::BwdPass<>::Params, fusedrnn::Layout, fusedrnn::Workspace)") == \
        ("persistent", "bwd", "rnn_relu", "fp16")
    assert cuda_rows.kernel_key("void fusedrnn::fwd_step_kernel<fusedrnn::FwdPass<fusedrnn::GruCell, float> >(...)") \
        == ("step", "fwd", "gru", "fp32")
    assert cuda_rows.kernel_key("void fusedrnn::persistent_kernel<fusedrnn::FwdRegPass<fusedrnn::LstmCell, "
                                "__nv_bfloat16> >(...)") == ("persistent", "fwd+zo+rd", "lstm", "bf16")
    assert cuda_rows.kernel_key("void fusedrnn::bwd_step_kernel<fusedrnn::BwdRegPass<fusedrnn::RnnCell<false>, "
                                "float> >(...)") == ("step", "bwd+zo+rd", "rnn_tanh", "fp32")
    assert cuda_rows.kernel_key("void fusedrnn::persistent_kernel<fusedrnn::BwdProjPass<__nv_bfloat16> >(...)") == \
        ("persistent", "bwd-proj", "lstm", "bf16")
    assert cuda_rows.kernel_key("void fusedrnn::bwd_step_kernel<fusedrnn::BwdProjPass<float> >(...)") == \
        ("step2", "bwd-proj", "lstm", "fp32")
    assert cuda_rows.kernel_key("void fusedrnn::fwd_proj_step_kernel<__half>(...)") == \
        ("step2", "fwd-proj", "lstm", "fp16")
    assert cuda_rows.kernel_key("void fusedrnn::cell_step_kernel<fusedrnn::RnnCell<true>, float, 8>(...)") == \
        ("cell-step", "nb8", "rnn_relu", "fp32")
    assert cuda_rows.kernel_key("void fusedrnn::persistent_kernel<fusedrnn::FwdResetPass<__nv_bfloat16> >(...)") == \
        ("persistent", "fwd", "gru_reset_before", "bf16")
    assert cuda_rows.kernel_key("void fusedrnn::fwd_reset_gates_step_kernel<float>(...)") == \
        ("step", "fwd", "gru_reset_before", "fp32")
    assert cuda_rows.kernel_key("void fusedrnn::bwd_reset_r_step_kernel<__half>(...)") == \
        ("step2", "bwd", "gru_reset_before", "fp16")
    assert cuda_rows.kernel_key("void fusedrnn::selftest_kernel(int)") is None


@pytest.mark.gate
def test_v2_rows_cover_both_directions_the_projection_and_the_decode_step(ci_rows):
    """The kernel contract v2's cases (cuda_rows.V2_CASES) are in every gate run, planned and compiled."""
    _, rows = ci_rows
    v2 = cuda_rows.V2_CASES
    for cell in cuda_rows.CELLS:
        for dtype in ("bf16", "fp16", "fp32"):
            mine = [r for r in rows if r["cell"] == cell and r["dtype"] == dtype]
            d2 = {(r["B"], r["H"], r["direction"]) for r in mine if r["variant"].startswith("D2")}
            assert d2 == {(B, H, d) for B, H, _ in v2["D2"] for d in ("fwd", "bwd")}, (cell, dtype, d2)
            steps = {(r["B"], r["H"]) for r in mine if r["variant"] == "cell-step"}
            no_step = cell in cuda_rows.NO_CELL_STEP  # the reset-before GRU: no fused decode step
            assert steps == (set() if no_step else {(B, H) for B, _, H, _ in v2["step"]}), (cell, dtype, steps)
            proj = [r for r in mine if r["variant"].startswith("proj")]
            if cell != "lstm":
                assert not proj
                continue
            assert {(r["B"], r["H"], r["variant"].split()[0], r["direction"]) for r in proj} == \
                {(B, H, f"proj{P}", d) for B, H, P, _ in v2["proj"] for d in ("fwd", "bwd")}
            for r in proj:
                assert "-proj" in r["kernel"] or "Proj" in r["kernel"] or "proj" in r["kernel"], r
                if r["layout"].split()[0] != "step":
                    assert " UP" in r["layout"], r  # the P-units per CTA of the second stage
    for r in rows:
        if r["variant"].startswith("D2") and r["layout"].split()[0] != "step":
            assert " D2 " in r["layout"], r


@pytest.mark.gate
def test_regularised_rows_compile_for_every_cell_and_dtype(ci_rows):
    """The regularised passes (zoneout and recurrent dropout, cuda_rows.V2_CASES["zo+rd"]) are
    planned and compiled in every gate run, their own kernels (FwdRegPass, BwdRegPass)."""
    _, rows = ci_rows
    want = {(B, H, d) for B, H, _ in cuda_rows.V2_CASES["zo+rd"] for d in ("fwd", "bwd")}
    for cell in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        for dtype in ("bf16", "fp16", "fp32"):
            mine = [r for r in rows if r["cell"] == cell and r["dtype"] == dtype and r["variant"].startswith("zo+rd")]
            assert {(r["B"], r["H"], r["direction"]) for r in mine} == want, (cell, dtype, mine)
            assert all("RegPass" in r["kernel"] and not r["error"] for r in mine), mine


#: the regularised kernels that spill today (ptxas, sm_90, bytes of spill stores + loads): the
#: zoneout masks of two steps ahead (and the dropout mask) in registers push the LSTM backward
#: (and the LSTM forward in fp32) past 255 registers. The GRU backward in 16 bits spilled 8 bytes
#: until the step matmul's m-tile count became ceil(RP / 16) (the unpadded slice): 254, none
REGULARISED_SPILLS = {("lstm", "bwd", "bf16"): 52, ("lstm", "bwd", "fp16"): 52, ("lstm", "bwd", "fp32"): 40,
                      ("lstm", "fwd", "fp32"): 8}


@pytest.mark.gate
def test_regularised_rows_spill_only_where_recorded(ci_rows):
    """The regularised persistent kernels spill nothing, except REGULARISED_SPILLS, each exactly so
    much (a change either way shows here)."""
    _, rows = ci_rows
    got = {(r["cell"], r["direction"], r["dtype"]): r["spill_bytes"] for r in rows
           if r["variant"] == "zo+rd" and r["spill_bytes"]}
    assert got == REGULARISED_SPILLS


@pytest.mark.gate
@pytest.mark.xfail(strict=True, reason="awaiting: the regularised LSTM and GRU backward spill (REGULARISED_SPILLS)")
def test_no_regularised_sixteen_bit_kernel_spills(ci_rows):
    _, rows = ci_rows
    spills = [(r["cell"], r["dtype"], r["direction"], r["spill_bytes"]) for r in rows
              if r["variant"] == "zo+rd" and r["dtype"] in ("bf16", "fp16") and r["spill_bytes"]]
    assert not spills, spills

