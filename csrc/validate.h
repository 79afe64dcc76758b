// Argument checking of the binding: every size, pointer, stride and dtype code that
// Python passes is checked here, before any CUDA call. Violations throw
// std::invalid_argument (Python ValueError).
#pragma once
#include <pybind11/pybind11.h>

#include "api.h"

namespace fusedrnn {

namespace py = pybind11;

// A tensor as Python passes it: (data_ptr, dtype_code, shape, strides) or None.
struct TensorArg {
  bool present = false;
  std::uintptr_t ptr = 0;
  DType dtype = DType::F32;
  std::vector<long long> shape, strides;
};

Cell parse_cell(const std::string& cell);
DType parse_dtype(long long code, const char* what);
Mode parse_mode(const std::string& mode);
// The launch knobs of a call: stream, device, mode (auto | persistent | cta | cluster | grid |
// step), forced units / batch rows (0: the plan chooses), spin limit.
struct LaunchKnobs {
  long long stream = 0, device = 0;
  std::string mode = "auto";
  long long units = 0, batch_rows = 0, passes = 0, spin_limit = 0;
  machine::Constants model{};  // checked by parse_machine
};
// The cost model's constants from the binding's `machine` argument: None (the defaults) or a
// dict of some of machine_model.h's names to finite values >= 0 (fusedrnn.machine.cxx_constants).
machine::Constants parse_machine(py::object machine);
Launch parse_launch(const LaunchKnobs& k);

ForwardArgs make_forward_args(const std::string& cell, bool reverse, py::object gx, py::object h0, py::object c0,
                              py::object w_hh, py::object b_hh, py::object lengths, py::object y, py::object hT,
                              py::object cT, py::object saved, py::object workspace, const LaunchKnobs& knobs,
                              py::object w_hr, py::object m);

BackwardArgs make_backward_args(const std::string& cell, bool reverse, py::object dy, py::object dhT,
                                py::object dcT, py::object w_t, py::object lengths, py::object saved,
                                py::object d_gx, py::object d_gh, py::object dh0, py::object dc0,
                                py::object workspace, const LaunchKnobs& knobs, py::object w_hr_t, py::object dh);

// The regularisers' masks of a forward or backward call whose other arguments were checked
// (a: its sizes; state: its h0 or dhT, whose shape drop_h shares): zoneout_h (T, B, D*P),
// zoneout_c (T, B, D*H) LSTM only, drop_h shaped like h0; each fp32, contiguous, or None.
// None with a projection (the kernels do not run them there).
Masks make_masks(Cell cell, int T, int B, int H, int P, int D, bool proj, py::object state, py::object zoneout_h,
                 py::object zoneout_c, py::object drop_h);

// The fused decode step: sizes and data pointers (the caller checked the tensors' shapes,
// dtypes and contiguity; here: ranges, null pointers, element alignment, the int32 indexing).
CellStepArgs make_cell_step_args(const std::string& cell, long long dtype, long long B, long long I, long long H,
                                 long long x, long long h0, long long c0, long long w_ih, long long w_hh,
                                 long long b_ih, long long b_hh, long long h, long long c, long long stream,
                                 long long device);

}  // namespace fusedrnn
