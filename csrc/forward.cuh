// Forward recurrence kernels, shared by every cell (the cell supplies the pointwise step).
//
// Dimensions: T steps, B batch, H hidden, G gates, S saved fp32 values per unit.
// Step s runs time t = s (reverse: T-1-s). Per step a block computes, for its units,
//   gh = h_{t-1} W_hhᵀ + b_hh  (block_matvec)   then   h_t, c_t = Cell::forward(gx_t, gh, ...)
// h_{t-1} is read from hbuf[s & 1] (h0 at s = 0) and h_t written to hbuf[(s+1) & 1]:
// double buffering needs exactly one grid barrier per step.
#pragma once
#include <cooperative_groups.h>

#include "matvec.cuh"

namespace fusedrnn {

template <typename T>
struct FwdParams {
  int steps, B, H, reverse;  // steps = T
  const T* gx;          // (T, B, G*H)
  const T* h0;          // (B, H)
  const T* c0;          // (B, H) LSTM only
  const T* w;           // (G*H, H)
  const T* bias;        // (G*H,) or null
  const int32_t* lengths;  // (B,) or null
  T* y;                 // (T, B, H)
  T* hT;                // (B, H)
  T* cT;                // (B, H) LSTM only
  float* saved;         // (T, B, S, H) or null
  T* hbuf;              // (2, B, H)
  float* hstate;        // (B, H) fp32 h, each element touched only by its owner block
  float* cstate;        // (B, H) fp32 c, likewise
};

template <class Cell, typename T, bool MMA>
struct Forward {
  static constexpr int G = Cell::G, S = Cell::S;

  // Step s for batch rows [b_lo, b_hi) and units [j0, j0+nu); weights w as in matvec_fma.
  __device__ static void step(const FwdParams<T>& p, const Geometry& geo, char* smem, int s,
                              int j0, int nu, int b_lo, int b_hi, const T* w, int w_gs, int ldw) {
    const int t = p.reverse ? p.steps - 1 - s : s;
    const int B = p.B, H = p.H, GH = G * H;
    const size_t BH = (size_t)B * H;
    const T* src = s == 0 ? p.h0 : p.hbuf + (s & 1) * BH;
    T* dst = p.hbuf + ((s + 1) & 1) * BH;
    const float* part = reinterpret_cast<const float*>(smem + geo.off_part);
    const bool last = s == p.steps - 1;
    for (int b0 = b_lo; b0 < b_hi; b0 += geo.BC) {
      const int nb = min(geo.BC, b_hi - b0);
      block_matvec<T, G, MMA>(smem, src + (size_t)b0 * H, nb, w, w_gs, ldw, nu, geo);
      for (int idx = threadIdx.x; idx < nb * nu; idx += kThreads) {
        const int bb = idx / nu, u = idx % nu, b = b0 + bb, j = j0 + u;
        const size_t bj = (size_t)b * H + j, tb = (size_t)t * B + b;
        const float h_prev = s == 0 ? to_f(p.h0[bj]) : p.hstate[bj];
        const float c_prev = Cell::HAS_C ? (s == 0 ? to_f(p.c0[bj]) : p.cstate[bj]) : 0.0f;
        float h = h_prev, c = c_prev;
        if (is_active(p.lengths, b, t)) {
          float gx[G], gh[G], sv[S];
#pragma unroll
          for (int g = 0; g < G; ++g) {
            gx[g] = to_f(p.gx[tb * GH + g * H + j]);
            gh[g] = part_sum(part, geo, bb, g * geo.U + u) + (p.bias ? to_f(p.bias[g * H + j]) : 0.0f);
          }
          Cell::forward(gx, gh, h_prev, c_prev, &h, &c, sv);
          p.y[tb * H + j] = from_f<T>(h);
          if (p.saved) {
#pragma unroll
            for (int q = 0; q < S; ++q) p.saved[(tb * S + q) * H + j] = sv[q];
          }
        } else {
          p.y[tb * H + j] = from_f<T>(0.0f);  // past the sequence's end: zero out, state kept
        }
        p.hstate[bj] = h;
        if (Cell::HAS_C) p.cstate[bj] = c;
        dst[bj] = from_f<T>(h);
        if (last) {
          p.hT[bj] = from_f<T>(h);
          if (Cell::HAS_C) p.cT[bj] = from_f<T>(c);
        }
      }
      __syncthreads();  // part is reused by the next chunk
    }
  }
};

// The fast path: one cooperative launch for all T steps; grid = ceil(H / U) blocks, each
// holding its (G*U, H) slice of W_hh in shared memory for the whole sequence.
template <class Cell, typename T, bool MMA>
__global__ void __launch_bounds__(kThreads)
fwd_persistent_kernel(FwdParams<T> p, Geometry geo) {
  extern __shared__ __align__(16) char smem[];
  const int j0 = blockIdx.x * geo.U, nu = min(geo.U, p.H - j0);
  T* ws = reinterpret_cast<T*>(smem + geo.off_w);
  load_weight_slice(ws, p.w, p.H, j0, nu, geo);
  __syncthreads();
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int s = 0; s < p.steps; ++s) {
    Forward<Cell, T, MMA>::step(p, geo, smem, s, j0, nu, 0, p.B, ws, geo.U, geo.ldw);
    if (s + 1 < p.steps) grid.sync();
  }
}

// The fallback: one launch per step, grid (ceil(H / U), batch ranges), weights read from
// global memory (L2) by FMA; still matmul and pointwise fused in one kernel.
template <class Cell, typename T>
__global__ void __launch_bounds__(kThreads)
fwd_step_kernel(FwdParams<T> p, Geometry geo, int s, int rows_per_block) {
  extern __shared__ __align__(16) char smem[];
  const int j0 = blockIdx.x * geo.U, nu = min(geo.U, p.H - j0);
  const int b_lo = blockIdx.y * rows_per_block, b_hi = min(p.B, b_lo + rows_per_block);
  Forward<Cell, T, false>::step(p, geo, smem, s, j0, nu, b_lo, b_hi, p.w + (size_t)j0 * p.H, p.H, p.H);
}

}  // namespace fusedrnn
