// The plain-C++ interface between the binding (host compiler, no CUDA headers)
// and the kernels (nvcc). Every pointer here was checked by validate.cpp.
//
// Dimensions: T time steps, B batch, H hidden units, G gates (LSTM 4, GRU 3, RNN 1),
// S fp32 values saved per (t, b, unit) for backward (LSTM 5, GRU 5, RNN 1).
#pragma once
#include <cstdint>
#include <string>

namespace fusedrnn {

enum class Cell : int { LSTM = 0, GRU = 1, RNN_TANH = 2, RNN_RELU = 3 };
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2, I32 = 3 };
// auto: persistent kernel when it fits on chip, else one launch per step
enum class Mode : int { AUTO = 0, PERSISTENT = 1, STEP = 2 };

inline int gates(Cell c) { return c == Cell::LSTM ? 4 : c == Cell::GRU ? 3 : 1; }
inline int saved_slots(Cell c) { return c == Cell::LSTM ? 5 : c == Cell::GRU ? 5 : 1; }
inline int dtype_size(DType d) { return d == DType::F16 || d == DType::BF16 ? 2 : 4; }
const char* cell_name(Cell c);
const char* dtype_name(DType d);

struct Launch {
  std::uintptr_t stream = 0;  // cudaStream_t of the caller (torch's current stream)
  int device = 0;             // CUDA device index the pointers live on
  Mode mode = Mode::AUTO;
};

struct ForwardArgs {
  Cell cell; DType dtype; int T, B, H; bool reverse;
  const void* gx;        // (T, B, G*H) dtype: x W_ihᵀ + b_ih
  const void* h0;        // (B, H) dtype
  const void* c0;        // (B, H) dtype, LSTM only, else null
  const void* w;         // (G*H, H) dtype: W_hh
  const void* bias;      // (G*H,) dtype or null: b_hh
  const int32_t* lengths;// (B,) int32 or null
  void* y;               // (T, B, H) dtype out
  void* hT;              // (B, H) dtype out
  void* cT;              // (B, H) dtype out, LSTM only
  float* saved;          // (T, B, S, H) fp32 out, or null when no backward follows
  void* hbuf;            // (2, B, H) dtype workspace: h exchanged between blocks
  float* state;          // (2, B, H) fp32 workspace: h and c state, owner-only
  Launch launch;
};

struct BackwardArgs {
  Cell cell; DType dtype; int T, B, H; bool reverse;
  const void* dy;        // (T, B, H) dtype
  const void* dhT;       // (B, H) dtype
  const void* dcT;       // (B, H) dtype, LSTM only
  const void* wt;        // (H, G*H) dtype: W_hhᵀ, contiguous
  const int32_t* lengths;// (B,) int32 or null
  const float* saved;    // (T, B, S, H) fp32 from forward
  void* d_gx;            // (T, B, G*H) dtype out
  void* d_gh;            // (T, B, G*H) dtype out; GRU only (else d_gx is both)
  void* dh0;             // (B, H) dtype out
  void* dc0;             // (B, H) dtype out, LSTM only
  float* state;          // (2, B, H) fp32 workspace: dh and dc carried, owner-only
  Launch launch;
};

// How a call would run on a device: for tests and for explain().
struct PlanInfo {
  bool persistent; int units_per_block, blocks, batch_chunk, smem_bytes, split_k;
  std::string reason;  // why the step fallback was chosen, empty if persistent
};

void forward(const ForwardArgs& a);    // throws std::runtime_error naming the kernel on CUDA errors
void backward(const BackwardArgs& a);
PlanInfo plan(bool backward, Cell cell, DType dtype, int B, int H, int device, Mode mode);
int device_count(std::string* error);  // 0 and the reason when CUDA cannot be used

}  // namespace fusedrnn
