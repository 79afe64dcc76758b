// Backward recurrence kernels: the reverse-time loop producing the pre-activation
// gradients d_gates and dh0/dc0. Weight gradients are GEMMs outside (fusedrnn/ops/fused.py).
//
// Dimensions: T steps, B batch, H hidden, G gates, GH = G*H, S saved values per unit.
// Phase s in [0, T] runs forward step T-1-s, i.e. time t = T-1-s (reverse: t = s);
// phase T only finishes dh0/dc0. The gradient entering h_{t} is split in two:
//   dh = dstate (the cell's local part, e.g. GRU's z·dh, or everything past a sequence's
//        end) + d_gh_{t_next} W_hh   (block_matvec over K = GH with the W_hhᵀ slice)
// d_gh_{t_next} is the output slice written in the previous phase, so no extra buffer
// and one grid barrier per phase.
#pragma once
#include <cooperative_groups.h>

#include "matvec.cuh"

namespace fusedrnn {

template <typename T>
struct BwdParams {
  int steps, B, H, reverse;  // steps = T
  const T* dy;          // (T, B, H)
  const T* dhT;         // (B, H)
  const T* dcT;         // (B, H) LSTM only
  const T* wt;          // (H, G*H) = W_hhᵀ
  const int32_t* lengths;  // (B,) or null
  const float* saved;   // (T, B, S, H)
  T* d_gx;              // (T, B, G*H)
  T* d_gh;              // (T, B, G*H); == d_gx unless the cell's gradients differ (GRU)
  T* dh0;               // (B, H)
  T* dc0;               // (B, H) LSTM only
  float* dstate;        // (B, H) fp32, owner-only
  float* cstate;        // (B, H) fp32 dc, owner-only
};

template <class Cell, typename T, bool MMA>
struct Backward {
  static constexpr int G = Cell::G, S = Cell::S;

  __device__ static int time_of(const BwdParams<T>& p, int s) { return p.reverse ? s : p.steps - 1 - s; }

  __device__ static void phase(const BwdParams<T>& p, const Geometry& geo, char* smem, int s,
                               int j0, int nu, int b_lo, int b_hi, const T* w, int ldw) {
    const int B = p.B, H = p.H, GH = G * H;
    const bool first = s == 0, final = s == p.steps;
    const int t = final ? 0 : time_of(p, s);
    const T* src = first ? nullptr : p.d_gh + (size_t)time_of(p, s - 1) * B * GH;
    const float* part = reinterpret_cast<const float*>(smem + geo.off_part);
    const bool split = p.d_gh != p.d_gx;
    for (int b0 = b_lo; b0 < b_hi; b0 += geo.BC) {
      const int nb = min(geo.BC, b_hi - b0);
      if (!first) block_matvec<T, 1, MMA>(smem, src + (size_t)b0 * GH, nb, w, 0, ldw, nu, geo);
      for (int idx = threadIdx.x; idx < nb * nu; idx += kThreads) {
        const int bb = idx / nu, u = idx % nu, b = b0 + bb, j = j0 + u;
        const size_t bj = (size_t)b * H + j;
        float dh = first ? to_f(p.dhT[bj]) : p.dstate[bj] + part_sum(part, geo, bb, u);
        const float dc = Cell::HAS_C ? (first ? to_f(p.dcT[bj]) : p.cstate[bj]) : 0.0f;
        if (final) {
          p.dh0[bj] = from_f<T>(dh);
          if (Cell::HAS_C) p.dc0[bj] = from_f<T>(dc);
          continue;
        }
        const size_t tb = (size_t)t * B + b;
        T* pgx = p.d_gx + tb * GH + j;
        T* pgh = p.d_gh + tb * GH + j;
        if (is_active(p.lengths, b, t)) {
          dh += to_f(p.dy[tb * H + j]);
          float sv[S], dgx[G], dgh[G], dl, dcp;
#pragma unroll
          for (int q = 0; q < S; ++q) sv[q] = p.saved[(tb * S + q) * H + j];
          Cell::backward(sv, dh, dc, dgx, dgh, &dl, &dcp);
#pragma unroll
          for (int g = 0; g < G; ++g) {
            pgx[g * H] = from_f<T>(dgx[g]);
            if (split) pgh[g * H] = from_f<T>(dgh[g]);
          }
          p.dstate[bj] = dl;
          if (Cell::HAS_C) p.cstate[bj] = dcp;
        } else {  // the state passed through unchanged: so does its gradient; dy is ignored
#pragma unroll
          for (int g = 0; g < G; ++g) {
            pgx[g * H] = from_f<T>(0.0f);
            if (split) pgh[g * H] = from_f<T>(0.0f);
          }
          p.dstate[bj] = dh;
          if (Cell::HAS_C) p.cstate[bj] = dc;
        }
      }
      __syncthreads();
    }
  }
};

// One cooperative launch for all T+1 phases; each block keeps its (U, G*H) slice of W_hhᵀ.
template <class Cell, typename T, bool MMA>
__global__ void __launch_bounds__(kThreads)
bwd_persistent_kernel(BwdParams<T> p, Geometry geo) {
  extern __shared__ __align__(16) char smem[];
  const int j0 = blockIdx.x * geo.U, nu = min(geo.U, p.H - j0);
  T* ws = reinterpret_cast<T*>(smem + geo.off_w);
  load_weight_slice(ws, p.wt, p.H, j0, nu, geo);
  __syncthreads();
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int s = 0; s <= p.steps; ++s) {
    Backward<Cell, T, MMA>::phase(p, geo, smem, s, j0, nu, 0, p.B, ws, geo.ldw);
    if (s < p.steps) grid.sync();
  }
}

// Fallback: one launch per phase (T+1 launches), W_hhᵀ rows read from global memory.
template <class Cell, typename T>
__global__ void __launch_bounds__(kThreads)
bwd_step_kernel(BwdParams<T> p, Geometry geo, int s, int rows_per_block) {
  extern __shared__ __align__(16) char smem[];
  const int j0 = blockIdx.x * geo.U, nu = min(geo.U, p.H - j0);
  const int b_lo = blockIdx.y * rows_per_block, b_hi = min(p.B, b_lo + rows_per_block);
  const int GH = Cell::G * p.H;
  Backward<Cell, T, false>::phase(p, geo, smem, s, j0, nu, b_lo, b_hi, p.wt + (size_t)j0 * GH, GH);
}

}  // namespace fusedrnn
