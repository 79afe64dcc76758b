"""The benchmark suite's "variant" section: fusedrnn's cells that torch.nn lacks (the GRU with
its reset gate before the product), checked against fusedrnn's float64 reference, with
torch.nn's standard cell of the same shape as the cost to beat."""
import pytest
import torch

from benchmarks import accuracy, providers, run, suite, timing
from benchmarks.anchors import anchor_ms
from benchmarks.variant_cases import VARIANT_SHAPE, cpu_variant_cases

REFERENCE = providers.PROVIDERS["fusedrnn-reference"]
TORCH_CPU = providers.PROVIDERS["torch-cpu"]


def _settings(provs):
    return suite.Settings(device=torch.device("cpu"), dtypes=["fp32"], modes=["fw", "fwbw"], providers=provs,
                          warmup=0, reps=2, baseline="torch-cpu", baseline_fp16=None)


def test_the_gpu_plan_times_each_variant_at_one_anchor_shape():
    cfg = run.configure(run.build_parser().parse_args([]), on_gpu=True)
    variants = [c for c, timed, _ in cfg.plan if c.section == "variant" and timed]
    assert [(c.cell, dict(c.options)) for c in variants] == [
        ("gru", {"reset_after": False}), ("lstm", {"zoneout": 0.1, "zoneout_cell": 0.05}),
        ("lstm", {"recurrent_dropout": 0.25}),
        ("gru", {"reset_after": False, "zoneout": 0.1, "recurrent_dropout": 0.25})]
    assert all((c.B, c.T, c.H) == VARIANT_SHAPE and c.I == c.H for c in variants)
    # the published cuDNN number of the standard cell at this shape is there to compare with
    assert all(anchor_ms(c, "bf16", m) is not None for c in variants for m in ("fw", "fwbw"))
    assert providers.kernel_cell(variants[0]) == "gru_reset_before"
    only_rnn = run.configure(run.build_parser().parse_args(["--cells", "rnn_tanh"]), on_gpu=True)
    assert not [c for c, *_ in only_rnn.plan if c.section == "variant"]


def test_the_cpu_default_checks_the_variant():
    cfg = run.configure(run.build_parser().parse_args([]), on_gpu=False)
    assert [c.label for c, timed, _ in cfg.plan if c.section == "variant" and not timed] == \
        [c.label for c in cpu_variant_cases()]


@pytest.mark.parametrize("which", range(len(cpu_variant_cases())))
def test_a_variant_is_checked_against_its_own_formula(monkeypatch, which):
    """The fused rows match fusedrnn's float64 reference of the variant; the torch.nn row runs
    the standard cell and is not checked. A fused module built without the variant's options
    (the standard cell) is WRONG: the oracle computes the variant, not torch.nn's cell."""
    case = cpu_variant_cases()[which]
    rows = suite.run_case(case, _settings([TORCH_CPU, REFERENCE]), timing.HostTimer(), timed=False)
    by = {(r["provider"], r["mode"]): r for r in rows}
    for mode in ("fw", "fwbw"):
        assert by["fusedrnn-reference", mode]["status"] == "ok"
        assert by["fusedrnn-reference", mode]["max_rel_err"] < 1e-6
        assert by["torch-cpu", mode]["max_rel_err"] is None
        assert suite.STANDARD_CELL_NOTE in by["torch-cpu", mode]["note"]

    real = providers._build_module

    def without_options(provider, c, state_dict):
        return real(provider, c.__class__(**{**c.as_dict(), "options": ()}), state_dict)
    monkeypatch.setattr(providers, "_build_module", without_options)
    rows = suite.run_case(case, _settings([TORCH_CPU, REFERENCE]), timing.HostTimer(), timed=False)
    assert {r["status"] for r in rows if r["provider"] == "fusedrnn-reference"} == {"WRONG"}


@pytest.mark.parametrize("which", range(len(cpu_variant_cases())))
def test_the_triton_kernels_run_the_variant(which):
    case = cpu_variant_cases()[which]
    triton = providers.PROVIDERS["fusedrnn-triton"]
    rows = suite.run_case(case, _settings([TORCH_CPU, triton]), timing.HostTimer(), timed=False)
    assert {(r["mode"], r["status"]) for r in rows if r["provider"] == "fusedrnn-triton"} == {("fw", "ok"),
                                                                                             ("fwbw", "ok")}


def test_the_masks_of_a_checked_call_are_seeded(monkeypatch):
    """Training-mode zoneout draws masks each call: the check seeds the generator before the
    oracle's call and the provider's, so both see the same masks; unseeded, the same provider
    would be WRONG (its masks differ from the oracle's)."""
    case = next(c for c in cpu_variant_cases() if dict(c.options).get("zoneout"))
    rows = suite.run_case(case, _settings([TORCH_CPU, REFERENCE]), timing.HostTimer(), timed=False)
    assert {r["status"] for r in rows if r["provider"] == "fusedrnn-reference"} == {"ok"}
    monkeypatch.setattr(accuracy.torch, "manual_seed", lambda seed: None)
    rows = suite.run_case(case, _settings([TORCH_CPU, REFERENCE]), timing.HostTimer(), timed=False)
    assert {r["status"] for r in rows if r["provider"] == "fusedrnn-reference"} == {"WRONG"}


def test_the_cuda_row_of_each_variant_says_whether_the_kernels_run_it(monkeypatch):
    """On a GPU (its availability faked here) the fused cuda rows run the reset-before GRU and the
    regularised LSTM; masks with the reset-before GRU are declined before a launch, with the
    kernels' reason, not attempted and failed."""
    from fusedrnn.ops import cuda
    monkeypatch.setattr(cuda, "availability", lambda device: None)
    cfg = run.configure(run.build_parser().parse_args([]), on_gpu=True)
    variants = [c for c, timed, _ in cfg.plan if c.section == "variant" and timed]
    why = [providers.why_not(providers.PROVIDERS["fusedrnn-cuda"], c, "bf16", torch.device("cuda")) for c in variants]
    assert why[:3] == [None, None, None], why
    assert why[3] is not None and "zoneout" in why[3] and "reset_after=False" in why[3], why[3]
