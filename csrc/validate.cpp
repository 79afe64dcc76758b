// See validate.h. Host compiler only: no CUDA headers.
#include "validate.h"

#include <cmath>

#include <pybind11/stl.h>

#include <climits>
#include <stdexcept>
#include <string>
#include <vector>

namespace fusedrnn {

namespace {

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument("fusedrnn._C: " + msg); }

std::string shape_str(const std::vector<long long>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

long long as_int(py::handle h, const char* what) {
  if (!py::isinstance<py::int_>(h) || py::isinstance<py::bool_>(h)) bad(std::string(what) + " must be an int");
  try {
    return h.cast<long long>();
  } catch (const py::cast_error&) {
    bad(std::string(what) + " does not fit in 64 bits");
  }
}

std::vector<long long> int_list(py::handle h, const std::string& what) {
  if (!py::isinstance<py::tuple>(h) && !py::isinstance<py::list>(h)) bad(what + " must be a tuple of ints");
  std::vector<long long> out;
  for (py::handle v : h) out.push_back(as_int(v, what.c_str()));
  return out;
}

TensorArg parse_tensor(py::object o, const std::string& name) {
  TensorArg t;
  if (o.is_none()) return t;
  if (!py::isinstance<py::tuple>(o) || py::len(o) != 4)
    bad(name + " must be None or a tuple (data_ptr, dtype_code, shape, strides)");
  py::tuple tup = o.cast<py::tuple>();
  const long long ptr = as_int(tup[0], (name + " data_ptr").c_str());
  if (ptr == 0) bad(name + " is a null pointer");
  if (ptr < 0) bad(name + " has a negative data_ptr");
  t.present = true;
  t.ptr = static_cast<std::uintptr_t>(ptr);
  t.dtype = parse_dtype(as_int(tup[1], (name + " dtype_code").c_str()), name.c_str());
  t.shape = int_list(tup[2], name + " shape");
  t.strides = int_list(tup[3], name + " strides");
  if (t.shape.size() != t.strides.size()) bad(name + ": shape and strides differ in length");
  for (long long d : t.shape)
    if (d < 0) bad(name + " has a negative size in shape " + shape_str(t.shape));
  if (t.ptr % dtype_size(t.dtype))
    bad(name + " data_ptr is not aligned to its element size");
  return t;
}

// Present, with exactly this shape and dtype, contiguous (size-1 dims may have any stride).
void expect(const TensorArg& t, const std::string& name, const std::vector<long long>& shape, DType dtype) {
  if (!t.present) bad(name + " is required (got None)");
  if (t.shape != shape) bad(name + " must have shape " + shape_str(shape) + ", got " + shape_str(t.shape));
  if (t.dtype != dtype)
    bad(name + " has dtype " + dtype_name(t.dtype) + ", expected " + dtype_name(dtype));
  long long expected = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    if (shape[i] != 1 && t.strides[i] != expected)
      bad(name + " must be contiguous: strides " + shape_str(t.strides) + " for shape " + shape_str(shape));
    expected *= shape[i];
  }
}

void expect_absent(const TensorArg& t, const std::string& name, const std::string& why) {
  if (t.present) bad(name + " must be None " + why);
}

void check_int32(long long n, const std::string& what) {
  if (n > INT_MAX) bad(what + " = " + std::to_string(n) + " exceeds the int32 range of the kernels' indexing");
}

// Shapes shared by both passes: T, B, H, P, D, checked for overflow of the kernels' int32 indexing.
void check_dims(long long T, long long B, long long H, long long P, long long D, Cell cell) {
  if (T < 1 || B < 1 || H < 1) bad("T, B, H must be >= 1, got " + std::to_string(T) + ", " + std::to_string(B) +
                                   ", " + std::to_string(H));
  const long long G = gates(cell), S = saved_slots(cell);
  check_int32(T, "T");
  check_int32(B * D * G * H, "B*D*G*H");
  check_int32(B * S * H, "B*S*H");
  check_int32(G * H * P, P == H ? "G*H*H (W_hh elements)" : "G*H*P (W_hh elements)");
}

std::string gates_text(long long D, long long G) {
  return (D > 1 ? std::to_string(D) + " directions x " : std::string()) + std::to_string(G) + " gates";
}

// The directions of a call: 1 when h0 (dh) is 2-D, else its leading size (1 or 2).
long long directions_of(const TensorArg& t, const std::string& name) {
  if (t.shape.size() == 2) return 1;
  if (t.shape.size() != 3 || t.shape[0] < 1 || t.shape[0] > 2)
    bad(name + " must be (B, P) or (D, B, P) with D 1 or 2, got shape " + shape_str(t.shape));
  return t.shape[0];
}

// A per-direction shape: `rest` with the leading D when the call's states are 3-D.
std::vector<long long> per_dir(bool leading, long long D, std::vector<long long> rest) {
  if (leading) rest.insert(rest.begin(), D);
  return rest;
}

void check_lengths(const TensorArg& t, long long B) {
  if (t.present) expect(t, "lengths", {B}, DType::I32);
}

void* ptr(const TensorArg& t) { return t.present ? reinterpret_cast<void*>(t.ptr) : nullptr; }

}  // namespace

Cell parse_cell(const std::string& cell) {
  std::string names;
  for (const CellInfo& c : kCells) {
    if (cell == c.name) return c.id;
    names += std::string(names.empty() ? "" : &c == &kCells[kNumCells - 1] ? " or " : ", ") + c.name;
  }
  bad("unknown cell '" + cell + "'; expected " + names);
}

DType parse_dtype(long long code, const char* what) {
  if (code < 0 || code > 4) bad(std::string(what) + ": unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

Mode parse_mode(const std::string& mode) {
  for (Mode m : {Mode::AUTO, Mode::PERSISTENT, Mode::CTA, Mode::CLUSTER, Mode::GRID, Mode::STEP})
    if (mode == mode_name(m)) return m;
  bad("unknown mode '" + mode + "'; expected auto, persistent, cta, cluster, grid or step");
}

Launch parse_launch(const LaunchKnobs& k) {
  if (k.stream < 0) bad("stream must be a cudaStream_t as a non-negative int");
  if (k.device < 0 || k.device > 63) bad("device index " + std::to_string(k.device) + " out of range");
  if (k.units < 0 || k.units > 65536) bad("units must be in [0, 65536], got " + std::to_string(k.units));
  if (k.batch_rows < 0 || k.batch_rows > 65536)
    bad("batch_rows must be in [0, 65536], got " + std::to_string(k.batch_rows));
  if (k.passes < 0 || k.passes > 65536) bad("passes must be in [0, 65536], got " + std::to_string(k.passes));
  if (k.spin_limit < 0) bad("spin_limit must be >= 0");
  Launch l;
  l.stream = static_cast<std::uintptr_t>(k.stream);
  l.device = static_cast<int>(k.device);
  l.mode = parse_mode(k.mode);
  l.units = static_cast<int>(k.units);
  l.batch_rows = static_cast<int>(k.batch_rows);
  l.passes = static_cast<int>(k.passes);
  l.spin_limit = k.spin_limit;
  l.model = k.model;
  return l;
}

machine::Constants parse_machine(py::object obj) {
  machine::Constants m;
  if (obj.is_none()) return m;
  if (!py::isinstance<py::dict>(obj)) bad("machine must be a dict of cost-model constants or None");
  for (auto item : obj.cast<py::dict>()) {
    const std::string name = py::str(item.first);
    double* dst = nullptr;
    machine::for_each(m, [&](const char* field, double& v) {
      if (name == field) dst = &v;
    });
    if (dst == nullptr) bad("machine: unknown constant '" + name + "'");
    if (!py::isinstance<py::float_>(item.second) && !py::isinstance<py::int_>(item.second))
      bad("machine: '" + name + "' must be a number");
    const double v = item.second.cast<double>();
    if (!std::isfinite(v) || v < 0) bad("machine: '" + name + "' must be finite and >= 0");
    *dst = v;
  }
  if (m.clock_ghz <= 0 || m.smem_bytes_per_clk <= 0 || m.dsmem_bytes_per_clk <= 0 || m.l2_bw_gbs <= 0 ||
      m.l2_bw_per_sm_gbs <= 0 || m.hbm_bw_gbs <= 0 || m.fma_per_clk <= 0)
    bad("machine: the clock and the bandwidths must be > 0 (the plan divides by them)");
  return m;
}

// The workspace: a contiguous 1-D uint8 buffer, 16-byte aligned (its size is checked against the plan).
static void check_workspace(const TensorArg& t) {
  if (!t.present) bad("workspace is required (got None)");
  if (t.shape.size() != 1) bad("workspace must be 1-D, got shape " + shape_str(t.shape));
  expect(t, "workspace", t.shape, DType::U8);
  if (t.ptr % 16) bad("workspace data_ptr is not 16-byte aligned");
}

ForwardArgs make_forward_args(const std::string& cell_s, bool reverse, py::object gx_o, py::object h0_o,
                              py::object c0_o, py::object w_o, py::object b_o, py::object len_o, py::object y_o,
                              py::object hT_o, py::object cT_o, py::object saved_o, py::object ws_o,
                              const LaunchKnobs& knobs, py::object w_hr_o, py::object m_o) {
  const Cell cell = parse_cell(cell_s);
  const TensorArg gx = parse_tensor(gx_o, "gx"), h0 = parse_tensor(h0_o, "h0"), c0 = parse_tensor(c0_o, "c0"),
                  w = parse_tensor(w_o, "w_hh"), bias = parse_tensor(b_o, "b_hh"),
                  len = parse_tensor(len_o, "lengths"), y = parse_tensor(y_o, "y"), hT = parse_tensor(hT_o, "hT"),
                  cT = parse_tensor(cT_o, "cT"), saved = parse_tensor(saved_o, "saved"),
                  ws = parse_tensor(ws_o, "workspace"), w_hr = parse_tensor(w_hr_o, "w_hr"), m = parse_tensor(m_o, "m");
  if (!gx.present) bad("gx is required (got None)");
  if (gx.shape.size() != 3) bad("gx must be 3-D (T, B, D*G*H), got shape " + shape_str(gx.shape));
  if (!h0.present) bad("h0 is required (got None)");
  const long long D = directions_of(h0, "h0"), G = gates(cell), T = gx.shape[0], B = gx.shape[1], DGH = gx.shape[2];
  const bool lead = h0.shape.size() == 3;
  if (DGH % (D * G)) bad("gx's last dimension " + std::to_string(DGH) + " is not a multiple of " + gates_text(D, G) +
                         " for cell " + cell_s);
  const long long H = DGH / (D * G), GH = G * H, S = saved_slots(cell);
  if (w_hr.present && cell != Cell::LSTM) bad("w_hr (a projection) exists only for the lstm cell, not " + cell_s);
  if (w_hr.present && w_hr.shape.size() != (lead ? 3u : 2u))
    bad("w_hr must have shape " + shape_str(per_dir(lead, D, {-1, H})) + ", got " + shape_str(w_hr.shape));
  const long long P = w_hr.present ? w_hr.shape[w_hr.shape.size() - 2] : H;
  if (w_hr.present && (P < 1 || P >= H)) bad("proj_size " + std::to_string(P) + " must be in [1, H=" +
                                             std::to_string(H) + ")");
  if (D == 2 && reverse) bad("reverse must be False with two directions (direction 1 runs backwards itself)");
  check_dims(T, B, H, P, D, cell);
  const DType dt = gx.dtype;
  if (dt != DType::F32 && dt != DType::F16 && dt != DType::BF16)
    bad(std::string("gx has dtype ") + dtype_name(dt) + "; the CUDA kernels take float32, float16 or bfloat16");
  expect(gx, "gx", {T, B, DGH}, dt);
  expect(h0, "h0", per_dir(lead, D, {B, P}), dt);
  expect(w, "w_hh", per_dir(lead, D, {GH, P}), dt);
  if (bias.present) expect(bias, "b_hh", per_dir(lead, D, {GH}), dt);
  if (w_hr.present) expect(w_hr, "w_hr", per_dir(lead, D, {P, H}), dt);
  check_lengths(len, B);
  expect(y, "y", {T, B, D * P}, dt);
  expect(hT, "hT", per_dir(lead, D, {B, P}), dt);
  if (cell_info(cell).has_c) {
    expect(c0, "c0", per_dir(lead, D, {B, H}), dt);
    expect(cT, "cT", per_dir(lead, D, {B, H}), dt);
  } else {
    expect_absent(c0, "c0", "for cell " + cell_s);
    expect_absent(cT, "cT", "for cell " + cell_s);
  }
  if (saved.present) expect(saved, "saved", per_dir(lead, D, {T, B, S, H}), DType::F32);
  if (w_hr.present && saved.present) {
    expect(m, "m", per_dir(lead, D, {T, B, H}), DType::F32);
  } else {
    expect_absent(m, "m", "without a projection and saved activations");
  }
  check_workspace(ws);

  ForwardArgs a{};
  a.cell = cell; a.dtype = dt; a.T = (int)T; a.B = (int)B; a.H = (int)H; a.P = (int)P; a.D = (int)D;
  a.reverse = reverse;
  a.gx = ptr(gx); a.h0 = ptr(h0); a.c0 = ptr(c0); a.w = ptr(w); a.bias = ptr(bias); a.w_hr = ptr(w_hr);
  a.lengths = static_cast<const int32_t*>(ptr(len));
  a.y = ptr(y); a.hT = ptr(hT); a.cT = ptr(cT); a.saved = static_cast<float*>(ptr(saved));
  a.m = static_cast<float*>(ptr(m));
  a.workspace = ptr(ws); a.workspace_bytes = ws.shape[0];
  a.launch = parse_launch(knobs);
  return a;
}

BackwardArgs make_backward_args(const std::string& cell_s, bool reverse, py::object dy_o, py::object dhT_o,
                                py::object dcT_o, py::object wt_o, py::object len_o, py::object saved_o,
                                py::object dgx_o, py::object dgh_o, py::object dh0_o, py::object dc0_o,
                                py::object ws_o, const LaunchKnobs& knobs, py::object wrt_o, py::object dh_o) {
  const Cell cell = parse_cell(cell_s);
  const TensorArg dy = parse_tensor(dy_o, "dy"), dhT = parse_tensor(dhT_o, "dhT"), dcT = parse_tensor(dcT_o, "dcT"),
                  wt = parse_tensor(wt_o, "w_hh_t"), len = parse_tensor(len_o, "lengths"),
                  saved = parse_tensor(saved_o, "saved"), dgx = parse_tensor(dgx_o, "d_gx"),
                  dgh = parse_tensor(dgh_o, "d_gh"), dh0 = parse_tensor(dh0_o, "dh0"), dc0 = parse_tensor(dc0_o, "dc0"),
                  ws = parse_tensor(ws_o, "workspace"), wrt = parse_tensor(wrt_o, "w_hr_t"),
                  dh = parse_tensor(dh_o, "dh");
  if (!dy.present) bad("dy is required (got None)");
  if (dy.shape.size() != 3) bad("dy must be 3-D (T, B, D*P), got shape " + shape_str(dy.shape));
  if (!dhT.present) bad("dhT is required (got None)");
  if (!dgx.present) bad("d_gx is required (got None)");
  if (dgx.shape.size() != 3) bad("d_gx must be 3-D (T, B, D*G*H), got shape " + shape_str(dgx.shape));
  const long long D = directions_of(dhT, "dhT"), G = gates(cell), S = saved_slots(cell);
  const bool lead = dhT.shape.size() == 3;
  const long long T = dy.shape[0], B = dy.shape[1], P = dhT.shape[lead ? 2 : 1], DGH = dgx.shape[2];
  if (DGH % (D * G)) bad("d_gx's last dimension " + std::to_string(DGH) + " is not a multiple of " + gates_text(D, G) +
                         " for cell " + cell_s);
  const long long H = DGH / (D * G);
  if (wrt.present && cell != Cell::LSTM) bad("w_hr_t (a projection) exists only for the lstm cell, not " + cell_s);
  if (!wrt.present && P != H) bad("dhT must have shape " + shape_str(per_dir(lead, D, {B, H})) + ", got " +
                                  shape_str(dhT.shape));
  if (wrt.present && (P < 1 || P >= H)) bad("proj_size " + std::to_string(P) + " must be in [1, H=" +
                                            std::to_string(H) + ")");
  if (D == 2 && reverse) bad("reverse must be False with two directions (direction 1 runs backwards itself)");
  check_dims(T, B, H, P, D, cell);
  const DType dt = dy.dtype;
  if (dt != DType::F32 && dt != DType::F16 && dt != DType::BF16)
    bad(std::string("dy has dtype ") + dtype_name(dt) + "; the CUDA kernels take float32, float16 or bfloat16");
  expect(dy, "dy", {T, B, D * P}, dt);
  expect(dhT, "dhT", per_dir(lead, D, {B, P}), dt);
  expect(wt, "w_hh_t", per_dir(lead, D, {P, G * H}), dt);
  if (wrt.present) {
    expect(wrt, "w_hr_t", per_dir(lead, D, {H, P}), dt);
    expect(dh, "dh", per_dir(lead, D, {T, B, P}), DType::F32);
  } else {
    expect_absent(dh, "dh", "without a projection");
  }
  check_lengths(len, B);
  expect(saved, "saved", per_dir(lead, D, {T, B, S, H}), DType::F32);
  expect(dgx, "d_gx", {T, B, DGH}, dt);
  if (cell == Cell::GRU) {
    expect(dgh, "d_gh", {T, B, DGH}, dt);
    if (dgh.ptr == dgx.ptr) bad("d_gh must not alias d_gx for cell gru");
  } else {
    expect_absent(dgh, "d_gh", "for cell " + cell_s + " (d_gx serves as both)");
  }
  expect(dh0, "dh0", per_dir(lead, D, {B, P}), dt);
  if (cell_info(cell).has_c) {
    expect(dcT, "dcT", per_dir(lead, D, {B, H}), dt);
    expect(dc0, "dc0", per_dir(lead, D, {B, H}), dt);
  } else {
    expect_absent(dcT, "dcT", "for cell " + cell_s);
    expect_absent(dc0, "dc0", "for cell " + cell_s);
  }
  check_workspace(ws);

  BackwardArgs a{};
  a.cell = cell; a.dtype = dt; a.T = (int)T; a.B = (int)B; a.H = (int)H; a.P = (int)P; a.D = (int)D;
  a.reverse = reverse;
  a.dy = ptr(dy); a.dhT = ptr(dhT); a.dcT = ptr(dcT); a.wt = ptr(wt); a.wrt = ptr(wrt);
  a.lengths = static_cast<const int32_t*>(ptr(len)); a.saved = static_cast<const float*>(ptr(saved));
  a.d_gx = ptr(dgx); a.d_gh = ptr(dgh); a.dh0 = ptr(dh0); a.dc0 = ptr(dc0);
  a.dh = static_cast<float*>(ptr(dh));
  a.workspace = ptr(ws); a.workspace_bytes = ws.shape[0];
  a.launch = parse_launch(knobs);
  return a;
}

Masks make_masks(Cell cell, int T, int B, int H, int P, int D, bool proj, py::object state, py::object zh_o,
                 py::object zc_o, py::object dm_o) {
  const TensorArg zh = parse_tensor(zh_o, "zoneout_h"), zc = parse_tensor(zc_o, "zoneout_c"),
                  dm = parse_tensor(dm_o, "drop_h"), st = parse_tensor(state, "h0");
  Masks m;
  if (!zh.present && !zc.present && !dm.present) return m;
  if (proj) bad("the CUDA kernels do not run zoneout or recurrent dropout with a projection (w_hr); "
                "zoneout_h, zoneout_c and drop_h must be None there");
  if (cell == Cell::GRU_RESET_BEFORE)
    bad("the CUDA kernels do not run zoneout or recurrent dropout for gru_reset_before (GRU with "
        "reset_after=False); zoneout_h, zoneout_c and drop_h must be None there");
  if (zc.present && !cell_info(cell).has_c)
    bad(std::string("zoneout_c (the cell state's zoneout mask) exists only for the lstm cell, not ") +
        cell_name(cell));
  const bool lead = st.shape.size() == 3;
  if (zh.present) expect(zh, "zoneout_h", {T, B, (long long)D * P}, DType::F32);
  if (zc.present) expect(zc, "zoneout_c", {T, B, (long long)D * H}, DType::F32);
  if (dm.present) expect(dm, "drop_h", per_dir(lead, D, {B, P}), DType::F32);
  m.zh = static_cast<const float*>(ptr(zh));
  m.zc = static_cast<const float*>(ptr(zc));
  m.dm = static_cast<const float*>(ptr(dm));
  return m;
}

CellStepArgs make_cell_step_args(const std::string& cell_s, long long dtype, long long B, long long I, long long H,
                                 long long x, long long h0, long long c0, long long w_ih, long long w_hh,
                                 long long b_ih, long long b_hh, long long h, long long c, long long stream,
                                 long long device) {
  const Cell cell = parse_cell(cell_s);
  const DType dt = parse_dtype(dtype, "dtype");
  if (dt != DType::F32 && dt != DType::F16 && dt != DType::BF16)
    bad(std::string("cell_step: dtype ") + dtype_name(dt) + "; the CUDA kernels take float32, float16 or bfloat16");
  if (B < 1 || I < 1 || H < 1)
    bad("cell_step: B, I, H must be >= 1, got " + std::to_string(B) + ", " + std::to_string(I) + ", " +
        std::to_string(H));
  const long long G = gates(cell);
  check_int32(G * H * I, "G*H*I (W_ih elements)");
  check_int32(G * H * H, "G*H*H (W_hh elements)");
  check_int32(B * I, "B*I");
  check_int32(B * H, "B*H");
  const long long esize = dtype_size(dt);
  auto pointer = [&](long long v, const char* name, bool required, bool allowed) -> const void* {
    if (v < 0) bad(std::string("cell_step: ") + name + " has a negative data_ptr");
    if (v == 0 && required) bad(std::string("cell_step: ") + name + " is a null pointer");
    if (v != 0 && !allowed) bad(std::string("cell_step: ") + name + " must be 0 (absent) for cell " + cell_s);
    if (v % esize) bad(std::string("cell_step: ") + name + " data_ptr is not aligned to its element size");
    return reinterpret_cast<const void*>(static_cast<std::uintptr_t>(v));
  };
  const bool has_c = cell_info(cell).has_c;
  CellStepArgs a{};
  a.cell = cell; a.dtype = dt; a.B = (int)B; a.I = (int)I; a.H = (int)H;
  a.x = pointer(x, "x", true, true);
  a.h0 = pointer(h0, "h0", true, true);
  a.c0 = pointer(c0, "c0", has_c, has_c);
  a.w_ih = pointer(w_ih, "w_ih", true, true);
  a.w_hh = pointer(w_hh, "w_hh", true, true);
  a.b_ih = pointer(b_ih, "b_ih", false, true);
  a.b_hh = pointer(b_hh, "b_hh", false, true);
  a.h = const_cast<void*>(pointer(h, "h", true, true));
  a.c = const_cast<void*>(pointer(c, "c", has_c, has_c));
  const Launch l = parse_launch(LaunchKnobs{stream, device});
  a.stream = l.stream;
  a.device = l.device;
  return a;
}

}  // namespace fusedrnn
