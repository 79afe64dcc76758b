// _selftest: the test module of csrc/ (tools/cuda_selftest/build.py), never installed. The
// launch path against a fake CUDA runtime, the host build of the cell math, and the C++ cell
// table, for tests/test_cuda_launch.py, tests/test_cuda_cells.py and tests/test_cell_table.py.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cell_table.h"
#include "selftest.h"

namespace py = pybind11;

PYBIND11_MODULE(_selftest, m) {
  m.doc() = "fusedrnn's C++ self-tests (tools/cuda_selftest); not part of fusedrnn._C";
  m.def("launch", &fusedrnn::launch_selftest, py::arg("name"),
        "Run a scenario of the launch path (csrc/launch.cuh) against a recording fake CUDA runtime; "
        "returns its call log.");
  m.def("cell_table", []() {
    py::dict table;
    for (const fusedrnn::CellInfo& c : fusedrnn::kCells)
      table[c.name] = py::dict(py::arg("id") = (int)c.id, py::arg("gates") = c.gates, py::arg("saved") = c.saved,
                               py::arg("has_c") = c.has_c);
    return table;
  }, "csrc/cell_table.h as {name: {id, gates, saved, has_c}}");
  fusedrnn::bind_host_cells(m);
}
