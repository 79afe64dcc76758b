// fusedrnn._C: the pybind11 module. Thin: validate (validate.cpp), then call the
// launchers (dispatch.cu) or the plan (plan.cpp). No torch headers: tensors arrive as
// (data_ptr, dtype_code, shape, strides) tuples, the stream as an int. Only the entry points
// fusedrnn uses live here (docs/design.md lists them; tests/test_cuda_exports.py checks it):
// the C++ self-tests and the host build of the cell math are a separate module
// (tools/cuda_selftest), built on demand for the tests.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "api.h"
#include "cell_step_plan.h"
#include "validate.h"

namespace py = pybind11;
using namespace fusedrnn;

namespace {

LaunchKnobs knobs(long long stream, long long device, const std::string& mode, long long units, long long rows,
                  long long passes, long long spin, py::object machine = py::none()) {
  LaunchKnobs k;
  k.stream = stream; k.device = device; k.mode = mode; k.units = units; k.batch_rows = rows; k.passes = passes;
  k.spin_limit = spin;
  k.model = parse_machine(machine);
  return k;
}

PlanRequest request(bool backward, const std::string& cell, long long dtype, long long B, long long H,
                    const std::string& mode, long long units, long long rows, long long passes, long long proj,
                    long long directions, py::object machine) {
  const Cell c = parse_cell(cell);
  const DType d = parse_dtype(dtype, "dtype");
  if (d != DType::F32 && d != DType::F16 && d != DType::BF16)
    throw std::invalid_argument("fusedrnn._C: plan: dtype must be a float type");
  if (B < 1 || H < 1 || B > INT32_MAX || H > INT32_MAX)
    throw std::invalid_argument("fusedrnn._C: plan: B and H must be in [1, 2^31)");
  if (gates(c) * H * H > INT32_MAX || B * gates(c) * H * directions > INT32_MAX)
    throw std::invalid_argument("fusedrnn._C: plan: B*D*G*H or G*H*H exceeds the int32 range of the kernels");
  if (proj != 0 && (c != Cell::LSTM || proj < 0 || proj >= H))
    throw std::invalid_argument("fusedrnn._C: plan: proj must be 0, or in [1, H) for the lstm cell");
  if (directions != 1 && directions != 2) throw std::invalid_argument("fusedrnn._C: plan: directions must be 1 or 2");
  const Launch l = parse_launch(knobs(0, 0, mode, units, rows, passes, 0, machine));
  return plan_request(backward, c, d, (int)B, (int)H, (int)proj, (int)directions, l);
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
  if (l.sms < 1 || l.smem_optin < 1 || l.smem_per_sm < 1)
    throw std::invalid_argument("fusedrnn._C: plan_for: bad limits");
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
  d["grid"] = p.tier == Tier::STEP ? p.step[0].grid_x * p.step[0].grid_y : p.grid;
  d["cluster"] = p.cluster;
  d["cooperative"] = p.cooperative;
  d["units_per_block"] = p.tier == Tier::STEP ? p.step[0].U : L.U;
  d["batch_rows"] = p.tier == Tier::STEP ? p.step[0].rows : L.BG;
  d["batch_groups"] = p.tier == Tier::STEP ? p.step[0].grid_y : L.NBG;
  d["smem_bytes"] = p.tier == Tier::STEP ? p.step[0].smem : L.smem;
  d["workspace_bytes"] = p.ws_bytes;
  const char* names[] = {"tier", "U", "UP", "NU", "Hp", "Pp", "BG", "NBG", "Bp", "D", "nst", "Kx", "off_bias",
                         "off_stage", "off_part", "smem"};
  const int vals[] = {L.tier, L.U, L.UP, L.NU, L.Hp, L.Pp, L.BG, L.NBG, L.Bp, L.D, L.nst, L.Kx, L.off_bias,
                      L.off_stage, L.off_part, L.smem};
  for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); ++i) layout[names[i]] = vals[i];
  py::list stages;
  for (int k = 0; k < (p.tier == Tier::STEP ? 0 : L.nst); ++k) {
    const Stage& S = L.st[k];
    const char* snames[] = {"cw", "nseg", "rows", "K", "Kp", "RP", "lda", "ldx", "ldp", "KS", "WM", "WN", "ppt",
                            "nx", "NP", "CPP", "off_a", "off_x", "off_out"};
    const int svals[] = {S.cw, S.nseg, S.rows, S.K, S.Kp, S.RP, S.lda, S.ldx, S.ldp, S.KS, S.WM, S.WN, S.ppt,
                         S.nx, S.NP, S.CPP, S.off_a, S.off_x, S.off_out};
    py::dict sd;
    for (size_t i = 0; i < sizeof(svals) / sizeof(svals[0]); ++i) sd[snames[i]] = svals[i];
    stages.append(sd);
  }
  // stage 0's fields at the top level too (the one stage of a plan without a projection)
  if (!stages.empty())
    for (auto item : stages[0].cast<py::dict>()) layout[item.first] = item.second;
  layout["stages"] = stages;
  d["layout"] = layout;
  step["units"] = p.step[0].U; step["rows"] = p.step[0].rows; step["chunk"] = p.step[0].BC;
  step["grid_x"] = p.step[0].grid_x; step["grid_y"] = p.step[0].grid_y; step["smem"] = p.step[0].smem;
  step["kernels"] = p.nstep;
  if (p.nstep > 1) step["grid_x2"] = p.step[1].grid_x;
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
           long long batch_rows, long long passes, long long spin_limit, py::object w_hr,
           py::object m, py::object machine, py::object zoneout_h, py::object zoneout_c, py::object drop_h) {
          ForwardArgs a = make_forward_args(cell, reverse, gx, h0, c0, w_hh, b_hh, lengths, y, hT, cT, saved,
                                            workspace,
                                            knobs(stream, device, mode, units, batch_rows, passes, spin_limit, machine),
                                            w_hr, m);
          a.masks = make_masks(a.cell, a.T, a.B, a.H, a.P, a.D, a.w_hr != nullptr, h0, zoneout_h, zoneout_c, drop_h);
          py::gil_scoped_release release;
          return forward(a);
        },
        py::arg("cell"), py::arg("reverse"), py::arg("gx"), py::arg("h0"), py::arg("c0"), py::arg("w_hh"),
        py::arg("b_hh"), py::arg("lengths"), py::arg("y"), py::arg("hT"), py::arg("cT"), py::arg("saved"),
        py::arg("workspace"), py::arg("stream"), py::arg("device"), py::arg("mode") = "auto", py::arg("units") = 0,
        py::arg("batch_rows") = 0, py::arg("passes") = 0, py::arg("spin_limit") = 0,
        py::arg("w_hr") = py::none(), py::arg("m") = py::none(),
        py::arg("machine") = py::none(), py::arg("zoneout_h") = py::none(), py::arg("zoneout_c") = py::none(),
        py::arg("drop_h") = py::none(),
        "Launch the forward recurrence on `stream`; tensors as (ptr, dtype_code, shape, strides). Returns '' or "
        "the note of a fallback to the per-step kernels. h0 (D, B, P) runs D directions in one launch; w_hr "
        "(LSTM projection) makes the state P wide, m (fp32, with saved) keeps o*tanh(c) for dW_hr. machine: the "
        "cost model's constants the plan uses ({name: value}, fusedrnn.machine.cxx_constants()), None: defaults. "
        "zoneout_h (T, B, D*P), zoneout_c (T, B, D*H) and drop_h (like h0), fp32: the regularisers' masks "
        "(fusedrnn/regularisers.py), not with w_hr.");

  m.def("backward",
        [](const std::string& cell, bool reverse, py::object dy, py::object dhT, py::object dcT, py::object w_t,
           py::object lengths, py::object saved, py::object d_gx, py::object d_gh, py::object dh0, py::object dc0,
           py::object workspace, long long stream, long long device, const std::string& mode, long long units,
           long long batch_rows, long long passes, long long spin_limit, py::object w_hr_t, py::object dh, py::object machine,
           py::object zoneout_h, py::object zoneout_c, py::object drop_h) {
          BackwardArgs a = make_backward_args(cell, reverse, dy, dhT, dcT, w_t, lengths, saved, d_gx, d_gh, dh0,
                                              dc0, workspace,
                                              knobs(stream, device, mode, units, batch_rows, passes, spin_limit, machine),
                                              w_hr_t, dh);
          a.masks = make_masks(a.cell, a.T, a.B, a.H, a.P, a.D, a.wrt != nullptr, dhT, zoneout_h, zoneout_c, drop_h);
          py::gil_scoped_release release;
          return backward(a);
        },
        py::arg("cell"), py::arg("reverse"), py::arg("dy"), py::arg("dhT"), py::arg("dcT"), py::arg("w_hh_t"),
        py::arg("lengths"), py::arg("saved"), py::arg("d_gx"), py::arg("d_gh"), py::arg("dh0"), py::arg("dc0"),
        py::arg("workspace"), py::arg("stream"), py::arg("device"), py::arg("mode") = "auto", py::arg("units") = 0,
        py::arg("batch_rows") = 0, py::arg("passes") = 0, py::arg("spin_limit") = 0,
        py::arg("w_hr_t") = py::none(), py::arg("dh") = py::none(),
        py::arg("machine") = py::none(), py::arg("zoneout_h") = py::none(), py::arg("zoneout_c") = py::none(),
        py::arg("drop_h") = py::none(),
        "Launch the backward recurrence (d_gates, dh0, dc0) on `stream`; with w_hr_t (H, P) it also writes dh "
        "(fp32, the gradient reaching each h_t, for dW_hr); machine as forward's; the masks as forward's.");

  m.def("plan_for",
        [](bool backward, const std::string& cell, long long dtype, long long B, long long H, py::dict limits,
           const std::string& mode, long long units, long long batch_rows, long long passes, long long proj,
           long long directions, long long max_active_cluster, py::object machine) {
          const PlanRequest r =
              request(backward, cell, dtype, B, H, mode, units, batch_rows, passes, proj, directions, machine);
          if (max_active_cluster <= 0) return plan_dict(make_plan(r, limits_from(limits)));
          return plan_dict(make_plan_fitted(r, limits_from(limits), [&](int cluster, int) {
            return cluster <= max_active_cluster ? 1 : 0;
          }));
        },
        py::arg("backward"), py::arg("cell"), py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("limits"),
        py::arg("mode") = "auto", py::arg("units") = 0, py::arg("batch_rows") = 0, py::arg("passes") = 0,
        py::arg("proj") = 0, py::arg("directions") = 1, py::arg("max_active_cluster") = 0,
        py::arg("machine") = py::none(),
        "The plan for a device described by `limits` (sms, smem_optin, smem_per_sm, regs_per_sm, cc_major, "
        "cc_minor, max_cluster, cooperative): a pure function, no GPU needed. max_active_cluster > 0 stands in "
        "for the device's occupancy answer: clusters larger than it do not fit the kernel (make_plan_fitted). "
        "machine: the cost model's constants ({name: value}, fusedrnn.machine.cxx_constants()), None: defaults.");

  m.def("plan",
        [](bool backward, const std::string& cell, long long dtype, long long B, long long H, long long device,
           const std::string& mode, long long units, long long batch_rows, long long passes, long long proj,
           long long directions, py::object machine) {
          const PlanRequest r =
              request(backward, cell, dtype, B, H, mode, units, batch_rows, passes, proj, directions, machine);
          parse_launch(knobs(0, device, mode, units, batch_rows, passes, 0));
          return plan_dict(plan_on_device(r, (int)device));
        },
        py::arg("backward"), py::arg("cell"), py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("device"),
        py::arg("mode") = "auto", py::arg("units") = 0, py::arg("batch_rows") = 0, py::arg("passes") = 0,
        py::arg("proj") = 0, py::arg("directions") = 1, py::arg("machine") = py::none(),
        "The plan on CUDA device `device`: its limits read off the device, then plan_for's function.");

  m.def("cell_step",
        [](const std::string& cell, long long dtype, long long B, long long I, long long H, long long x, long long h0,
           long long c0, long long w_ih, long long w_hh, long long b_ih, long long b_hh, long long h, long long c,
           long long stream, long long device) {
          CellStepArgs a = make_cell_step_args(cell, dtype, B, I, H, x, h0, c0, w_ih, w_hh, b_ih, b_hh, h, c, stream,
                                               device);
          py::gil_scoped_release release;
          return cell_step(a);
        },
        py::arg("cell"), py::arg("dtype"), py::arg("B"), py::arg("I"), py::arg("H"), py::arg("x"), py::arg("h0"),
        py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("h"),
        py::arg("c"), py::arg("stream"), py::arg("device"),
        "One fused step of a cell (decode): h, c = cell(x W_ihᵀ + b_ih, h0 W_hhᵀ + b_hh, h0, c0) in one launch. "
        "Tensors as data pointers of contiguous (B, I), (B, H), (G*H, I), (G*H, H), (G*H,) arrays of `dtype` "
        "(0 for an absent bias, c0 and c for a cell without c); the caller checked their shapes.");

  m.def("cell_step_plan_for",
        [](const std::string& cell, long long dtype, long long B, long long I, long long H, py::dict limits) {
          const Cell c = parse_cell(cell);
          const DType d = parse_dtype(dtype, "dtype");
          if (d != DType::F32 && d != DType::F16 && d != DType::BF16)
            throw std::invalid_argument("fusedrnn._C: cell_step_plan_for: dtype must be a float type");
          if (B < 1 || I < 1 || H < 1 || B > INT32_MAX || I > INT32_MAX || H > INT32_MAX)
            throw std::invalid_argument("fusedrnn._C: cell_step_plan_for: B, I, H must be in [1, 2^31)");
          CellStepRequest r;
          r.G = gates(c); r.esize = dtype_size(d); r.B = (int)B; r.I = (int)I; r.H = (int)H;
          const CellStepPlan p = make_cell_step_plan(r, limits_from(limits));
          py::dict out;
          out["units_per_block"] = p.UB; out["warps_per_unit"] = p.KW; out["rows_per_block"] = p.NB;
          out["grid_x"] = p.grid_x; out["grid_y"] = p.grid_y; out["weight_mb"] = p.weight_mb;
          out["estimate_us"] = p.est_us; out["reason"] = p.reason;
          return out;
        },
        py::arg("cell"), py::arg("dtype"), py::arg("B"), py::arg("I"), py::arg("H"), py::arg("limits"),
        "The geometry of the fused decode step on a device described by `limits` (no GPU needed).");

  m.def("device_limits", [](long long device) {
    parse_launch(knobs(0, device, "auto", 0, 0, 0, 0));
    return limits_dict(device_limits((int)device));
  }, py::arg("device"), "The limits of a CUDA device the plan uses.");

  m.def("device_count", []() {
    std::string err;
    int n = device_count(&err);
    return py::make_tuple(n, err);
  }, "(number of CUDA devices this extension's runtime sees, error text if none)");

  m.def("saved_slots", [](const std::string& cell) { return saved_slots(parse_cell(cell)); }, py::arg("cell"),
        "fp32 values the forward kernel saves per (t, b, unit) for the backward one");
}
