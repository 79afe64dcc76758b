"""The CUDA launch path (csrc/launch.cuh) driven against a recording fake of the CUDA
runtime (tools/cuda_selftest/launch_selftest.cpp, in the C++ test module: the `cxx_selftest`
fixture), and the Python side of a launch (fallback warning, error report of the kernels): no
GPU needed. The fallback with the real kernels behind a refusing runtime:
tests/test_cuda_emulated.py (FUSEDRNN_EMU_REFUSE).

Fixes of issue 11 pinned here: the caller's current device is restored (8), AUTO falls
back to the per-step kernels when a cooperative or cluster launch is refused (9), the
dynamic shared-memory attribute is set once per kernel, to the opt-in maximum (10)."""
import warnings

import pytest
import torch

from fusedrnn import machine
from fusedrnn.ops import cuda as cuda_ops


@pytest.fixture(scope="module")
def run(cxx_selftest):
    """A scenario of launch_selftest.cpp: its call log."""
    return cxx_selftest.launch


def test_caller_device_is_restored(run):
    log = run("device_guard")
    assert "current 0" not in log, f"the launcher left device 0 current: {log}"
    sets = [line for line in log if line.startswith("set_device")]
    assert sets == ["set_device 0", "set_device 1"], log  # switch for the launch, switch back; nothing on device 1
    launch = next(line for line in log if line.startswith("launch"))
    assert launch.endswith("on device 0"), log
    assert log.count("current 1") == 2, log


def test_max_dynamic_smem_is_set_once_to_the_opt_in_maximum(run):
    log = run("attribute_once")
    attrs = [line for line in log if line.startswith("set_attribute persistent max_dynamic_smem")]
    optin = machine.LIMITS["smem_optin"] - 1024  # the fake device is the machine model's; 1 KB static smem
    assert attrs == [f"set_attribute persistent max_dynamic_smem {optin}"], log
    assert len([line for line in log if line.startswith("launch persistent")]) == 3, log
    # the largest plan of the three still fits under the attribute
    smems = [int(line.split("smem=")[1].split()[0]) for line in log if line.startswith("launch persistent")]
    assert max(smems) <= optin and len(set(smems)) > 1, log


def test_auto_falls_back_to_per_step_when_a_persistent_launch_is_refused(run):
    log = run("fallback_auto")
    plans = [line for line in log if line.startswith("plan ")]
    assert plans == ["plan grid", "plan cluster"], log
    notes = [line for line in log if line.startswith("note: ")]
    assert len(notes) == 2 and all("refused (cudaErrorCooperativeLaunchTooLarge)" in n and "per-step" in n
                                   for n in notes), notes
    assert "grid launch" in notes[0] and "cluster launch" in notes[1] and "clusters of" in notes[1], notes
    assert log.count("clear_error") == 2, log
    steps = [line for line in log if line.startswith("launch step")]
    assert len(steps) == 6, log  # T = 3 per-step launches after each refusal


def test_forced_tier_does_not_fall_back(run):
    log = run("fallback_forced")
    assert not any(line.startswith("launch step") for line in log), log
    err = [line for line in log if line.startswith("error: ")]
    assert len(err) == 1 and "grid launch" in err[0] and "cudaErrorCooperativeLaunchTooLarge" in err[0], log


def test_unknown_selftest(run):
    with pytest.raises(ValueError, match="unknown selftest"):
        run("nope")


# --- the Python side ---------------------------------------------------------------

def test_fallback_note_warns_once(monkeypatch):
    monkeypatch.setattr(cuda_ops, "_warned", set())
    ws = torch.zeros(256, dtype=torch.uint8)
    with pytest.warns(RuntimeWarning, match="ran the per-step kernels instead"):
        cuda_ops._after_launch("the grid launch of x was refused (e); ran the per-step kernels instead", ws, "lstm", "step")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cuda_ops._after_launch("the grid launch of x was refused (e); ran the per-step kernels instead", ws, "lstm", "step")
        cuda_ops._after_launch("", ws, "lstm", "step")


def test_a_report_of_a_finished_launch_raises_from_its_call_with_no_switch_set(monkeypatch):
    """The host side of the timeout policy (fusedrnn/ops/timeouts.py): a launch that has finished
    when it returns (CPU tensors: the emulated kernels) is read at once, checks asked for or not."""
    for name in ("FUSEDRNN_CHECK", "FUSEDRNN_CUDA_CHECK", "FUSEDRNN_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    ws = torch.zeros(256, dtype=torch.uint8)
    cuda_ops._after_launch("", ws, "gru backward", "grid")  # a clean report
    ws[:64].view(torch.int32)[:7] = torch.tensor([1, 1, 4, 2, 0, 3, 5], dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"gru backward: the backward persistent kernel \(grid tier\) timed out: "
                                           r"CTA 2 waited at step 4 for the h chunk of CTA 0"):
        cuda_ops._after_launch("", ws, "gru backward", "grid")


def test_status_report_names_the_step_and_the_ctas():
    status = [1, 0, 17, 5, 12, 16, 18] + [0] * 9
    msg = cuda_ops.describe_status(status, "lstm forward")
    assert "forward persistent kernel (grid tier) timed out" in msg
    assert "CTA 5 waited at step 17 for the h chunk of CTA 12" in msg and "read 16, wanted 18" in msg
    assert cuda_ops.describe_status([0] * 16, "x") is None


def test_knobs_from_the_environment(monkeypatch):
    monkeypatch.setenv("FUSEDRNN_CUDA_MODE", "cluster")
    monkeypatch.setenv("FUSEDRNN_CUDA_UNITS", "8")
    monkeypatch.setenv("FUSEDRNN_CUDA_FAKE_LAUNCH_FAILURE", "1")  # the old test hook: no longer a production knob
    monkeypatch.delenv("FUSEDRNN_CALIBRATION", raising=False)
    k = cuda_ops._knobs()
    assert k == dict(mode="cluster", units=8, batch_rows=0, passes=0, spin_limit=0,
                     machine=machine.cxx_constants(machine.DEFAULTS))
    monkeypatch.setenv("FUSEDRNN_CUDA_MODE", "fast")
    with pytest.raises(ValueError, match="expected one of auto, persistent, cta, cluster, grid, step"):
        cuda_ops._knobs()
    monkeypatch.setenv("FUSEDRNN_CUDA_MODE", "auto")
    monkeypatch.setenv("FUSEDRNN_CUDA_UNITS", "-3")
    with pytest.raises(ValueError, match="must be >= 0"):
        cuda_ops._knobs()
