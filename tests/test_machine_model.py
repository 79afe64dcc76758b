"""The machine model (fusedrnn/machine.py): one set of constants, overridable from a
calibration file, and the C++ planner's generated copy of the defaults agreeing with it."""
import json
import math
import os
import re
import shutil
import subprocess

import pytest

from fusedrnn import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "csrc", "machine_model.h")


def _write(tmp_path, constants, **top):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(dict({"schema": 1, "meaningful": True, "constants": constants}, **top)))
    return str(path)


def test_defaults_without_a_file(monkeypatch):
    monkeypatch.delenv("FUSEDRNN_CALIBRATION", raising=False)
    m = machine.load()
    assert m == machine.DEFAULTS and m is not machine.DEFAULTS
    assert set(machine.CALIBRATED) <= set(m)
    # the H100 figures the issue names: ~32 cycles per dependent mma.sync, three for 3xTF32
    assert machine.mma_dep_cycles(m, 16) == 32 and machine.mma_dep_cycles(m, 32) == 96


def test_issue_time_fills_a_schedulers_stalls_up_to_its_rate():
    m = dict(machine.DEFAULTS, issue_ipc_per_warp=0.5, scheduler_ipc=1.0, warps_per_scheduler_issue=4.0,
             clock_ghz=1.0)
    one = machine.issue_us(m, 1000, 4)               # one warp per scheduler: the warp's own rate
    assert one == pytest.approx(2.0)
    assert machine.issue_us(m, 1000, 8) == pytest.approx(one)       # two warps fill each other's stalls
    assert machine.issue_us(m, 1000, 16) == pytest.approx(2 * one)  # four: the scheduler's rate binds
    # a scheduler no faster than one warp: the warps take turns (the model before 2026-12-07)
    slow = dict(m, scheduler_ipc=0.5)
    assert machine.issue_us(slow, 1000, 8) == pytest.approx(2 * one)
    with pytest.raises(ValueError, match="scheduler_ipc"):
        machine.issue_us(dict(m, scheduler_ipc=0.0), 1000, 8)


def test_a_calibration_file_overrides_its_constants(tmp_path, monkeypatch):
    path = _write(tmp_path, {"l2_latency_us": 0.5, "mma_dep_cycles_tf32": 40}, clock_ghz=1.98, sm_count=132)
    m = machine.load(path)
    assert m["l2_latency_us"] == 0.5 and m["mma_dep_cycles_tf32"] == 40 and m["clock_ghz"] == 1.98
    assert m["flag_round_trip_us"] == machine.DEFAULTS["flag_round_trip_us"]  # not in the file: the default
    monkeypatch.setenv("FUSEDRNN_CALIBRATION", path)
    assert machine.load()["l2_latency_us"] == 0.5


def test_unknown_constants_warn_and_are_ignored(tmp_path):
    with pytest.warns(UserWarning, match="unknown constant 'warp_drive_us'"):
        m = machine.load(_write(tmp_path, {"warp_drive_us": 1.0}))
    assert "warp_drive_us" not in m


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan, "fast"])
def test_bad_values_are_refused_naming_the_key(tmp_path, bad):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"constants": {"launch_us": bad}}).replace("Infinity", "1e999"))
    with pytest.raises(ValueError, match="launch_us"):
        machine.load(str(path))


def test_the_header_is_generated_from_machine_py():
    with open(HEADER) as f:
        assert f.read() == machine.cxx_header(), "regenerate: python -m fusedrnn.machine --header > csrc/machine_model.h"


def _printed(tmp_path, header: str, body: str) -> dict:
    """{name: text} that a C++ main() with `body` (printf lines "name value") prints, compiled
    against csrc/`header`."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler")
    src = tmp_path / "print.cpp"
    src.write_text(f'#include <cstdio>\n#include "{header}"\nint main() {{\n{body}}}\n')
    exe = tmp_path / "print"
    subprocess.run([cxx, "-std=c++17", "-I" + os.path.dirname(HEADER), str(src), "-o", str(exe)], check=True)
    return dict(line.split() for line in subprocess.run([str(exe)], capture_output=True, text=True,
                                                        check=True).stdout.splitlines())


def test_cxx_and_python_agree(tmp_path):
    """Compile the header the planner includes and print its constants: they are machine.py's."""
    out = _printed(tmp_path, "machine_model.h", "".join(f'  std::printf("{n} %.17g\\n", fusedrnn::machine::{n});\n'
                                                        for n in machine.CXX_NAMES))
    assert {k: float(v) for k, v in out.items()} == {n: machine.DEFAULTS[n] for n in machine.CXX_NAMES}
    # the planner takes its constants from the request's machine::Constants (that header's
    # defaults, or a calibrated set), not from literals of its own
    with open(os.path.join(ROOT, "csrc", "plan.cpp")) as f:
        plan = f.read()
    assert "Model M(r.model)" in plan
    for n in ("flag_round_trip_us", "l2_latency_us", "mma_dep_cycles_bf16", "mma_dep_cycles_tf32", "launch_us"):
        assert f"m.{n}" in plan


def test_cxx_device_limits_are_machine_pys(tmp_path):
    """The default device the C++ side plans for where it asks none (model_limits, plan.h: the
    emulated device, the C++ self-tests) is machine.LIMITS, field by field."""
    body = ("  const fusedrnn::DeviceLimits d = fusedrnn::model_limits();\n"
            + "".join(f'  std::printf("{n} %d\\n", d.{n});\n' for n in machine.LIMITS)
            + '  std::printf("portable_cluster %d\\n", fusedrnn::machine::limits::portable_cluster);\n')
    out = _printed(tmp_path, "plan.h", body)
    assert {k: int(v) for k, v in out.items()} == dict(machine.LIMITS, portable_cluster=machine.PORTABLE_CLUSTER)


def test_no_cxx_file_writes_the_device_limits_down_again():
    """Every C++ reader of the default device's limits or of the cluster sizes takes them from
    machine_model.h: no DeviceLimits field set to a number, no H100 figure, no cluster size."""
    copies = re.compile(r"(?<!val\.)\b(?:sms|smem_optin|smem_per_sm|regs_per_sm|cc_major|cc_minor|max_cluster|cooperative)"
                        r"\s*=\s*[1-9]|\b(?:132|227|228)\b|cluster\w*(?:\(\))?\s*[<>]=?\s*(?:8|16)\b|\?\s*(?:8|16)\s*:")
    folders = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "tools", "cuda_emu"), os.path.join(ROOT, "tools", "cuda_selftest")]
    found = []
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(dirpath, name)
                if os.path.splitext(name)[1] in (".h", ".cuh", ".cpp", ".cu") and path != HEADER:
                    with open(path) as f:
                        found += [f"{os.path.relpath(path, ROOT)}: {m.group(0)}" for m in copies.finditer(f.read())]
    assert not found, found


def test_the_cxx_constants_struct_defaults_to_the_header(tmp_path):
    """machine::Constants (what a plan request carries) starts as the header's defaults, and
    for_each names every field, so the binding can set a calibrated set by name."""
    out = _printed(tmp_path, "machine_model.h", "  fusedrnn::machine::Constants c;\n  fusedrnn::machine::for_each("
                   'c, [](const char* n, double& v) { std::printf("%s %.17g\\n", n, v); });\n')
    assert list(out) == list(machine.CXX_NAMES)
    assert {n: float(v) for n, v in out.items()} == {n: machine.DEFAULTS[n] for n in machine.CXX_NAMES}


def test_cxx_constants_follow_the_calibration_file(tmp_path, monkeypatch):
    """What fusedrnn.ops.cuda hands the extension's plan and launch calls: the C++ names of
    the current model, a calibration file's values included."""
    monkeypatch.delenv("FUSEDRNN_CALIBRATION", raising=False)
    assert machine.cxx_constants() == {n: machine.DEFAULTS[n] for n in machine.CXX_NAMES}
    monkeypatch.setenv("FUSEDRNN_CALIBRATION", _write(tmp_path, {"l2_latency_us": 0.9}, clock_ghz=1.5))
    c = machine.cxx_constants()
    assert c["l2_latency_us"] == 0.9 and c["clock_ghz"] == 1.5 and set(c) == set(machine.CXX_NAMES)


def test_no_tool_writes_the_device_limits_down_again():
    """The tooling's Python reads the default device's limits from machine.py (or, where it
    avoids importing fusedrnn, from the generated header) instead of restating them."""
    from tools.device_check import calibrate
    assert calibrate.default_smem_optin() == machine.H100_LIMITS["smem_optin"]
    copies = re.compile(r"\b(?:227|228)\s*\*\s*1024\b|\b(?:sms|smem_optin|smem_per_sm|regs_per_sm)\s*=\s*\d")
    found = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "tools")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    found += [f"{os.path.relpath(path, ROOT)}: {m.group(0)}" for m in copies.finditer(f.read())]
    assert not found, found
