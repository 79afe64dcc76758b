// The C++ self-tests' pieces (tools/cuda_selftest/build.py builds them with csrc/plan.cpp into
// the test module _selftest; module.cpp binds them). Not part of fusedrnn._C.
#pragma once
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

namespace fusedrnn {

// launch_selftest.cpp: one scenario of the launch path (csrc/launch.cuh) against a recording
// fake of the CUDA runtime; returns the call log.
std::vector<std::string> launch_selftest(const std::string& name);

// host_cells.cpp: the host build of csrc/cells/*.cuh (cell_forward, cell_backward) on `m`.
void bind_host_cells(pybind11::module_& m);

}  // namespace fusedrnn
