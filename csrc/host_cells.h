#pragma once
#include <pybind11/pybind11.h>

namespace fusedrnn {
void bind_host_cells(pybind11::module_& m);  // host_cells.cpp: the cell math for CPU tests
}
