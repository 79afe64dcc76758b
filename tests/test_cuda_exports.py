"""fusedrnn._C exports the entry points fusedrnn uses and nothing else (docs/design.md lists
them): the C++ self-tests, the host build of the cell math and the launch-failure test hook
live in the test module tools/cuda_selftest, not in the user's extension or its call
signatures. Checked on the binding's source everywhere, and on the built module where nvcc
built it."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")

#: the functions of fusedrnn._C (docs/design.md, "The CUDA extension's entry points")
ENTRY_POINTS = {"forward", "backward", "plan", "plan_for", "cell_step", "cell_step_plan_for", "device_limits",
                "device_count", "saved_slots"}
#: its constants
ATTRIBUTES = {"DTYPE_CODES", "MODES", "THREADS"}
#: the keyword arguments of the two launches: tensors, stream and device, and the plan's knobs
#: (machine: its cost-model constants, fusedrnn.machine.cxx_constants(), a calibration file's)
FORWARD_ARGS = ["cell", "reverse", "gx", "h0", "c0", "w_hh", "b_hh", "lengths", "y", "hT", "cT", "saved", "workspace",
                "stream", "device", "mode", "units", "batch_rows", "passes", "spin_limit", "w_hr", "m", "machine",
                "zoneout_h", "zoneout_c", "drop_h"]
BACKWARD_ARGS = ["cell", "reverse", "dy", "dhT", "dcT", "w_hh_t", "lengths", "saved", "d_gx", "d_gh", "dh0", "dc0",
                 "workspace", "stream", "device", "mode", "units", "batch_rows", "passes", "spin_limit", "w_hr_t", "dh",
                 "machine", "zoneout_h", "zoneout_c", "drop_h"]


def _read(path):
    with open(path) as f:
        return f.read()


def _csrc_texts():
    for dirpath, _, files in os.walk(CSRC):
        for name in files:
            yield os.path.relpath(os.path.join(dirpath, name), ROOT), _read(os.path.join(dirpath, name))


def _def_args(binding: str, name: str) -> list[str]:
    """The py::arg names of m.def(name, ...) in the binding's source."""
    start = binding.index(f'm.def("{name}"')
    end = binding.find("m.def(", start + 1)
    return re.findall(r'py::arg\("(\w+)"\)', binding[start:end if end > 0 else None])


def test_the_binding_source_defines_exactly_the_entry_points():
    binding = _read(os.path.join(CSRC, "binding.cpp"))
    assert set(re.findall(r'\bm\.def\(\s*"(\w+)"', binding)) == ENTRY_POINTS
    assert set(re.findall(r'\bm\.attr\(\s*"(\w+)"\)', binding)) == ATTRIBUTES
    # nothing else in csrc/ adds to a pybind11 module (as the host-cell bindings once did)
    for path, text in _csrc_texts():
        if path != os.path.join("csrc", "binding.cpp"):
            assert not re.search(r"\.def\(\s*\"|PYBIND11_MODULE", text), f"{path} binds functions to a module"


def test_the_launches_take_no_test_hook():
    """forward/backward take tensors, the stream, the device and the plan's knobs; a test that wants
    a refused launch asks the emulated device (FUSEDRNN_EMU_REFUSE) or the fake runtime."""
    binding = _read(os.path.join(CSRC, "binding.cpp"))
    assert _def_args(binding, "forward") == FORWARD_ARGS
    assert _def_args(binding, "backward") == BACKWARD_ARGS
    for path, text in _csrc_texts():  # nor does a launch's argument struct carry one
        assert not re.search(r"fake_launch|fake_failure|selftest\(|bind_host_cells", text), path


def _check_module(C):
    public = {n for n in dir(C) if not n.startswith("__")}
    assert public == ENTRY_POINTS | ATTRIBUTES, f"unexpected: {public - ENTRY_POINTS - ATTRIBUTES}, " \
                                                 f"missing: {(ENTRY_POINTS | ATTRIBUTES) - public}"
    for name, args in (("forward", FORWARD_ARGS), ("backward", BACKWARD_ARGS)):
        signature = getattr(C, name).__doc__.splitlines()[0]
        assert re.findall(r"(\w+): ", signature) == args, signature


def test_the_built_module_exports_exactly_the_entry_points():
    _check_module(pytest.importorskip("fusedrnn._C", reason="the CUDA extension is not built (no nvcc)"))


def test_the_host_build_of_the_binding_exports_exactly_the_entry_points():
    """The same binding.cpp compiled by the host compiler (the CUDA emulator's module, tools/cuda_emu):
    checked where no nvcc build of fusedrnn._C is at hand."""
    from tools.cuda_emu import build as cuda_emu

    if cuda_emu.cuda_include() is None:
        pytest.skip("no CUDA headers for the host build")
    _check_module(cuda_emu.load())
