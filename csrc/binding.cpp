// fusedrnn._C: the pybind11 module. Thin: validate (validate.cpp), then call the
// launchers (dispatch.cu). No torch headers: tensors arrive as
// (data_ptr, dtype_code, shape, strides) tuples, the stream as an int.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "api.h"
#include "host_cells.h"
#include "validate.h"

namespace py = pybind11;
using namespace fusedrnn;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedrnn CUDA kernels (persistent LSTM/GRU/RNN recurrences); see fusedrnn/ops/cuda.py";
  m.attr("DTYPE_CODES") = py::dict(py::arg("float32") = 0, py::arg("float16") = 1, py::arg("bfloat16") = 2,
                                   py::arg("int32") = 3);

  m.def("forward",
        [](const std::string& cell, bool reverse, py::object gx, py::object h0, py::object c0, py::object w_hh,
           py::object b_hh, py::object lengths, py::object y, py::object hT, py::object cT, py::object saved,
           py::object hbuf, py::object state, long long stream, long long device, const std::string& mode) {
          ForwardArgs a = make_forward_args(cell, reverse, gx, h0, c0, w_hh, b_hh, lengths, y, hT, cT, saved, hbuf,
                                            state, stream, device, mode);
          py::gil_scoped_release release;
          forward(a);
        },
        py::arg("cell"), py::arg("reverse"), py::arg("gx"), py::arg("h0"), py::arg("c0"), py::arg("w_hh"),
        py::arg("b_hh"), py::arg("lengths"), py::arg("y"), py::arg("hT"), py::arg("cT"), py::arg("saved"),
        py::arg("hbuf"), py::arg("state"), py::arg("stream"), py::arg("device"), py::arg("mode") = "auto",
        "Launch the forward recurrence on `stream`; tensors as (ptr, dtype_code, shape, strides).");

  m.def("backward",
        [](const std::string& cell, bool reverse, py::object dy, py::object dhT, py::object dcT, py::object w_t,
           py::object lengths, py::object saved, py::object d_gx, py::object d_gh, py::object dh0, py::object dc0,
           py::object state, long long stream, long long device, const std::string& mode) {
          BackwardArgs a = make_backward_args(cell, reverse, dy, dhT, dcT, w_t, lengths, saved, d_gx, d_gh, dh0,
                                              dc0, state, stream, device, mode);
          py::gil_scoped_release release;
          backward(a);
        },
        py::arg("cell"), py::arg("reverse"), py::arg("dy"), py::arg("dhT"), py::arg("dcT"), py::arg("w_hh_t"),
        py::arg("lengths"), py::arg("saved"), py::arg("d_gx"), py::arg("d_gh"), py::arg("dh0"), py::arg("dc0"),
        py::arg("state"), py::arg("stream"), py::arg("device"), py::arg("mode") = "auto",
        "Launch the backward recurrence (d_gates, dh0, dc0) on `stream`.");

  m.def("plan",
        [](bool backward, const std::string& cell, long long dtype, long long B, long long H, long long device,
           const std::string& mode) {
          const Cell c = parse_cell(cell);
          const DType d = parse_dtype(dtype, "dtype");
          if (d == DType::I32) throw std::invalid_argument("fusedrnn._C: plan: dtype must be a float type");
          if (B < 1 || H < 1 || B > INT32_MAX || H > INT32_MAX)
            throw std::invalid_argument("fusedrnn._C: plan: B and H must be in [1, 2^31)");
          if (gates(c) * H * H > INT32_MAX || B * gates(c) * H > INT32_MAX)
            throw std::invalid_argument("fusedrnn._C: plan: B*G*H or G*H*H exceeds the int32 range of the kernels");
          const Launch l = parse_launch(0, device, mode);
          PlanInfo p = fusedrnn::plan(backward, c, d, (int)B, (int)H, l.device, l.mode);
          py::dict out;
          out["persistent"] = p.persistent; out["units_per_block"] = p.units_per_block;
          out["blocks"] = p.blocks; out["batch_chunk"] = p.batch_chunk; out["smem_bytes"] = p.smem_bytes;
          out["split_k"] = p.split_k; out["reason"] = p.reason;
          return out;
        },
        py::arg("backward"), py::arg("cell"), py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("device"),
        py::arg("mode") = "auto", "How a call of this size would run on `device` (persistent or per-step, and why).");

  m.def("device_count", []() {
    std::string err;
    int n = device_count(&err);
    return py::make_tuple(n, err);
  }, "(number of CUDA devices this extension's runtime sees, error text if none)");

  bind_host_cells(m);
}
