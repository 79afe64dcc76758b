// The plain-C++ interface between the binding (host compiler, no CUDA headers) and the
// kernels (nvcc). Every pointer here was checked by validate.cpp.
//
// Dimensions: T time steps, B batch, H hidden units, P the state fed back (proj_size of an
// LSTM with a projection, else H), G gates (LSTM 4, GRU 3, RNN 1), S fp32 values saved per
// (t, b, unit) for backward (LSTM 5, GRU 5, GRU with the reset gate before the product 4, RNN 1; cell_table.h), D directions run by one launch (1 or 2;
// direction 1 runs each sequence backwards from lengths[b] - 1). Shapes below are for D = 2;
// with D = 1 the leading D is absent.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cell_table.h"
#include "plan.h"

namespace fusedrnn {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2, I32 = 3, U8 = 4 };

inline int gates(Cell c) { return cell_info(c).gates; }         // cell_table.h
inline int saved_slots(Cell c) { return cell_info(c).saved; }
inline int dtype_size(DType d) { return d == DType::F16 || d == DType::BF16 ? 2 : d == DType::U8 ? 1 : 4; }
const char* cell_name(Cell c);
const char* dtype_name(DType d);

struct Launch {
  std::uintptr_t stream = 0;  // cudaStream_t of the caller (torch's current stream)
  int device = 0;             // CUDA device index the pointers live on
  Mode mode = Mode::AUTO;
  int units = 0, batch_rows = 0, passes = 0;  // forced U / BG / NP of the plan (tests), 0: choose
  long long spin_limit = 0;   // clock cycles a grid-tier flag wait spins before reporting (0: default)
  machine::Constants model{};  // the plan's cost-model constants (a calibration file's, else the defaults)
};

// Zoneout and recurrent dropout (fusedrnn/regularisers.py), fp32, each null when off; never with
// a projection. Shapes for D = 2 as above (D = 1: no leading D of dm).
struct Masks {
  const float* zh = nullptr;  // (T, B, D*P): h_t = zh h_{t-1} + (1 - zh) h̃_t
  const float* zc = nullptr;  // (T, B, D*H), LSTM only: the same for c
  const float* dm = nullptr;  // (D, B, P): the recurrent product takes dm ⊙ h_{t-1}
  bool any() const { return zh != nullptr || zc != nullptr || dm != nullptr; }
};

struct ForwardArgs {
  Cell cell; DType dtype; int T, B, H, P, D; bool reverse;
  const void* gx;        // (T, B, D*G*H) dtype: x W_ihᵀ + b_ih, direction d at columns [d*G*H, (d+1)*G*H)
  const void* h0;        // (D, B, P) dtype
  const void* c0;        // (D, B, H) dtype, LSTM only, else null
  const void* w;         // (D, G*H, P) dtype: W_hh
  const void* bias;      // (D, G*H) dtype or null: b_hh
  const void* w_hr;      // (D, P, H) dtype: W_hr (LSTM projection) or null (then P == H)
  const int32_t* lengths;// (B,) int32 or null
  void* y;               // (T, B, D*P) dtype out
  void* hT;              // (D, B, P) dtype out
  void* cT;              // (D, B, H) dtype out, LSTM only
  float* saved;          // (D, T, B, S, H) fp32 out, or null when no backward follows
  float* m;              // (D, T, B, H) fp32 out: o ⊙ tanh(c) with a projection and saved, else null
  void* workspace;       // (plan.ws_bytes,) uint8: see Plan
  long long workspace_bytes;
  Launch launch;
  Masks masks;           // zoneout / recurrent dropout (validate.cpp: check_masks), none by default
};

struct BackwardArgs {
  Cell cell; DType dtype; int T, B, H, P, D; bool reverse;
  const void* dy;        // (T, B, D*P) dtype
  const void* dhT;       // (D, B, P) dtype
  const void* dcT;       // (D, B, H) dtype, LSTM only
  const void* wt;        // (D, P, G*H) dtype: W_hhᵀ, contiguous
  const void* wrt;       // (D, H, P) dtype: W_hrᵀ, contiguous (projection) or null
  const int32_t* lengths;// (B,) int32 or null
  const float* saved;    // (D, T, B, S, H) fp32 from forward
  void* d_gx;            // (T, B, D*G*H) dtype out
  void* d_gh;            // (T, B, D*G*H) dtype out; GRU only (else d_gx is both, gru_reset_before included)
  void* dh0;             // (D, B, P) dtype out
  void* dc0;             // (D, B, H) dtype out, LSTM only
  float* dh;             // (D, T, B, P) fp32 out with a projection: the gradient reaching h_t, else null
  void* workspace;       // (plan.ws_bytes,) uint8
  long long workspace_bytes;
  Launch launch;
  Masks masks;           // the forward's masks, none by default
};

// The fused decode step (cell_step.cuh): one time step of a cell, both matmuls and the pointwise.
struct CellStepArgs {
  Cell cell; DType dtype; int B, I, H;
  const void* x;         // (B, I)
  const void* h0;        // (B, H)
  const void* c0;        // (B, H), LSTM only, else null
  const void* w_ih;      // (G*H, I)
  const void* w_hh;      // (G*H, H)
  const void* b_ih;      // (G*H,) or null
  const void* b_hh;      // (G*H,) or null
  void* h;               // (B, H) out
  void* c;               // (B, H) out, LSTM only
  std::uintptr_t stream = 0;
  int device = 0;
};

// proj: proj_size (0: none); D: directions.
inline PlanRequest plan_request(bool backward, Cell cell, DType dtype, int B, int H, int proj, int D,
                                const Launch& l) {
  PlanRequest r;
  r.backward = backward; r.G = gates(cell); r.S = saved_slots(cell); r.esize = dtype_size(dtype);
  r.B = B; r.H = H; r.P = proj; r.D = D;
  r.reset_before = cell == Cell::GRU_RESET_BEFORE;
  r.mode = l.mode; r.units = l.units; r.batch_rows = l.batch_rows; r.passes = l.passes;
  r.cell = (int)cell; r.dtype = (int)dtype;
  r.model = l.model;
  return r;
}
// Returns "" or the note of a fallback (AUTO: a refused persistent launch ran per step);
// throws std::runtime_error naming the kernel and tier on CUDA errors.
std::string forward(const ForwardArgs& a);
std::string backward(const BackwardArgs& a);
std::string cell_step(const CellStepArgs& a);
// reads the device's limits, then make_plan_fitted with the occupancy of r's persistent kernel
Plan plan_on_device(const PlanRequest& r, int device);
DeviceLimits device_limits(int device);
int device_count(std::string* error);  // 0 and the reason when CUDA cannot be used

}  // namespace fusedrnn
