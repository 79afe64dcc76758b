// fusedrnn._C: the pybind11 module. Thin: validate (validate.cpp), then call the
// launchers (dispatch.cu) or the plan (plan.cpp). No torch headers: tensors arrive as
// (data_ptr, dtype_code, shape, strides) tuples, the stream as an int.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "api.h"
#include "host_cells.h"
#include "validate.h"

namespace py = pybind11;
using namespace fusedrnn;

namespace {

LaunchKnobs knobs(long long stream, long long device, const std::string& mode, long long units, long long rows,
                  long long passes, long long spin, bool fake_failure) {
  LaunchKnobs k;
  k.stream = stream; k.device = device; k.mode = mode; k.units = units; k.batch_rows = rows; k.passes = passes;
  k.spin_limit = spin; k.fake_launch_failure = fake_failure;
  return k;
}

PlanRequest request(bool backward, const std::string& cell, long long dtype, long long B, long long H,
                    const std::string& mode, long long units, long long rows, long long passes) {
  const Cell c = parse_cell(cell);
  const DType d = parse_dtype(dtype, "dtype");
  if (d != DType::F32 && d != DType::F16 && d != DType::BF16)
    throw std::invalid_argument("fusedrnn._C: plan: dtype must be a float type");
  if (B < 1 || H < 1 || B > INT32_MAX || H > INT32_MAX)
    throw std::invalid_argument("fusedrnn._C: plan: B and H must be in [1, 2^31)");
  if (gates(c) * H * H > INT32_MAX || B * gates(c) * H > INT32_MAX)
    throw std::invalid_argument("fusedrnn._C: plan: B*G*H or G*H*H exceeds the int32 range of the kernels");
  const Launch l = parse_launch(knobs(0, 0, mode, units, rows, passes, 0, false));
  return plan_request(backward, c, d, (int)B, (int)H, l);
}

DeviceLimits limits_from(const py::dict& d) {
  DeviceLimits l;
  auto get = [&](const char* k) {
    if (!d.contains(k)) throw std::invalid_argument(std::string("fusedrnn._C: plan_for: limits lack '") + k + "'");
    return d[k].cast<int>();
  };
  l.sms = get("sms"); l.smem_optin = get("smem_optin"); l.smem_per_sm = get("smem_per_sm");
  l.regs_per_sm = get("regs_per_sm"); l.cc_major = get("cc_major"); l.cc_minor = get("cc_minor");
  l.max_cluster = get("max_cluster"); l.cooperative = get("cooperative");
  if (l.sms < 1 || l.smem_optin < 1 || l.smem_per_sm < 1) throw std::invalid_argument("fusedrnn._C: plan_for: bad limits");
  return l;
}

py::dict limits_dict(const DeviceLimits& l) {
  py::dict d;
  d["sms"] = l.sms; d["smem_optin"] = l.smem_optin; d["smem_per_sm"] = l.smem_per_sm;
  d["regs_per_sm"] = l.regs_per_sm; d["cc_major"] = l.cc_major; d["cc_minor"] = l.cc_minor;
  d["max_cluster"] = l.max_cluster; d["cooperative"] = l.cooperative;
  return d;
}

py::dict plan_dict(const Plan& p) {
  const Layout& L = p.L;
  py::dict d, layout, step, est;
  d["tier"] = tier_name(p.tier);
  d["ok"] = p.ok;
  d["persistent"] = p.tier != Tier::STEP;
  d["reason"] = p.reason;
  d["grid"] = p.tier == Tier::STEP ? p.step.grid_x * p.step.grid_y : p.grid;
  d["cluster"] = p.cluster;
  d["cooperative"] = p.cooperative;
  d["units_per_block"] = p.tier == Tier::STEP ? p.step.U : L.U;
  d["batch_rows"] = p.tier == Tier::STEP ? p.step.rows : L.BG;
  d["batch_groups"] = p.tier == Tier::STEP ? p.step.grid_y : L.NBG;
  d["smem_bytes"] = p.tier == Tier::STEP ? p.step.smem : L.smem;
  d["workspace_bytes"] = p.ws_bytes;
  const char* names[] = {"tier", "U", "NU", "Hp", "BG", "NBG", "Bp", "K", "Kp", "RP", "lda", "ldx", "ldp", "KS",
                         "WM", "WN", "ppt", "nx", "NP", "CPP", "off_a", "off_x", "off_part", "off_bias", "off_stage", "smem"};
  const int vals[] = {L.tier, L.U, L.NU, L.Hp, L.BG, L.NBG, L.Bp, L.K, L.Kp, L.RP, L.lda, L.ldx, L.ldp, L.KS,
                      L.WM, L.WN, L.ppt, L.nx, L.NP, L.CPP, L.off_a, L.off_x, L.off_part, L.off_bias, L.off_stage, L.smem};
  for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); ++i) layout[names[i]] = vals[i];
  d["layout"] = layout;
  step["units"] = p.step.U; step["rows"] = p.step.rows; step["chunk"] = p.step.BC;
  step["grid_x"] = p.step.grid_x; step["grid_y"] = p.step.grid_y; step["smem"] = p.step.smem;
  d["step"] = step;
  est["sync_us"] = p.est.sync; est["exchange_us"] = p.est.exchange; est["compute_us"] = p.est.compute;
  est["pointwise_us"] = p.est.pointwise; est["io_us"] = p.est.io; est["step_us"] = p.est.step;
  est["waves"] = p.est.waves;
  d["estimate"] = est;
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedrnn CUDA kernels (persistent LSTM/GRU/RNN recurrences); see fusedrnn/ops/cuda.py";
  m.attr("DTYPE_CODES") = py::dict(py::arg("float32") = 0, py::arg("float16") = 1, py::arg("bfloat16") = 2,
                                   py::arg("int32") = 3, py::arg("uint8") = 4);
  m.attr("MODES") = py::make_tuple("auto", "persistent", "cta", "cluster", "grid", "step");
  m.attr("THREADS") = kThreads;

  m.def("forward",
        [](const std::string& cell, bool reverse, py::object gx, py::object h0, py::object c0, py::object w_hh,
           py::object b_hh, py::object lengths, py::object y, py::object hT, py::object cT, py::object saved,
           py::object workspace, long long stream, long long device, const std::string& mode, long long units,
           long long batch_rows, long long passes, long long spin_limit, bool fake_launch_failure) {
          ForwardArgs a = make_forward_args(cell, reverse, gx, h0, c0, w_hh, b_hh, lengths, y, hT, cT, saved,
                                            workspace,
                                            knobs(stream, device, mode, units, batch_rows, passes, spin_limit,
                                                  fake_launch_failure));
          py::gil_scoped_release release;
          return forward(a);
        },
        py::arg("cell"), py::arg("reverse"), py::arg("gx"), py::arg("h0"), py::arg("c0"), py::arg("w_hh"),
        py::arg("b_hh"), py::arg("lengths"), py::arg("y"), py::arg("hT"), py::arg("cT"), py::arg("saved"),
        py::arg("workspace"), py::arg("stream"), py::arg("device"), py::arg("mode") = "auto", py::arg("units") = 0,
        py::arg("batch_rows") = 0, py::arg("passes") = 0, py::arg("spin_limit") = 0,
        py::arg("fake_launch_failure") = false,
        "Launch the forward recurrence on `stream`; tensors as (ptr, dtype_code, shape, strides). Returns '' or "
        "the note of a fallback to the per-step kernels.");

  m.def("backward",
        [](const std::string& cell, bool reverse, py::object dy, py::object dhT, py::object dcT, py::object w_t,
           py::object lengths, py::object saved, py::object d_gx, py::object d_gh, py::object dh0, py::object dc0,
           py::object workspace, long long stream, long long device, const std::string& mode, long long units,
           long long batch_rows, long long passes, long long spin_limit, bool fake_launch_failure) {
          BackwardArgs a = make_backward_args(cell, reverse, dy, dhT, dcT, w_t, lengths, saved, d_gx, d_gh, dh0,
                                              dc0, workspace,
                                              knobs(stream, device, mode, units, batch_rows, passes, spin_limit,
                                                    fake_launch_failure));
          py::gil_scoped_release release;
          return backward(a);
        },
        py::arg("cell"), py::arg("reverse"), py::arg("dy"), py::arg("dhT"), py::arg("dcT"), py::arg("w_hh_t"),
        py::arg("lengths"), py::arg("saved"), py::arg("d_gx"), py::arg("d_gh"), py::arg("dh0"), py::arg("dc0"),
        py::arg("workspace"), py::arg("stream"), py::arg("device"), py::arg("mode") = "auto", py::arg("units") = 0,
        py::arg("batch_rows") = 0, py::arg("passes") = 0, py::arg("spin_limit") = 0,
        py::arg("fake_launch_failure") = false,
        "Launch the backward recurrence (d_gates, dh0, dc0) on `stream`.");

  m.def("plan_for",
        [](bool backward, const std::string& cell, long long dtype, long long B, long long H, py::dict limits,
           const std::string& mode, long long units, long long batch_rows, long long passes) {
          return plan_dict(make_plan(request(backward, cell, dtype, B, H, mode, units, batch_rows, passes),
                                     limits_from(limits)));
        },
        py::arg("backward"), py::arg("cell"), py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("limits"),
        py::arg("mode") = "auto", py::arg("units") = 0, py::arg("batch_rows") = 0, py::arg("passes") = 0,
        "The plan for a device described by `limits` (sms, smem_optin, smem_per_sm, regs_per_sm, cc_major, "
        "cc_minor, max_cluster, cooperative): a pure function, no GPU needed.");

  m.def("plan",
        [](bool backward, const std::string& cell, long long dtype, long long B, long long H, long long device,
           const std::string& mode, long long units, long long batch_rows, long long passes) {
          const PlanRequest r = request(backward, cell, dtype, B, H, mode, units, batch_rows, passes);
          parse_launch(knobs(0, device, mode, units, batch_rows, passes, 0, false));
          return plan_dict(plan_on_device(r, (int)device));
        },
        py::arg("backward"), py::arg("cell"), py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("device"),
        py::arg("mode") = "auto", py::arg("units") = 0, py::arg("batch_rows") = 0, py::arg("passes") = 0,
        "The plan on CUDA device `device`: its limits read off the device, then plan_for's function.");

  m.def("device_limits", [](long long device) {
    parse_launch(knobs(0, device, "auto", 0, 0, 0, 0, false));
    return limits_dict(device_limits((int)device));
  }, py::arg("device"), "The limits of a CUDA device the plan uses.");

  m.def("device_count", []() {
    std::string err;
    int n = device_count(&err);
    return py::make_tuple(n, err);
  }, "(number of CUDA devices this extension's runtime sees, error text if none)");

  m.def("saved_slots", [](const std::string& cell) { return saved_slots(parse_cell(cell)); }, py::arg("cell"),
        "fp32 values the forward kernel saves per (t, b, unit) for the backward one");

  m.def("_selftest", &selftest, py::arg("name"),
        "Run a C++ test of the launch path against a fake CUDA runtime; returns its call log.");

  bind_host_cells(m);
}
