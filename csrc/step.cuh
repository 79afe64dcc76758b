// The per-step fallback (tier 4): one launch per step for sizes whose weights do not fit
// on chip (or when a persistent launch is refused). Small CTAs over (4 units, batch
// rows); weights and the exchanged vector read from global memory (L2) by FMA, the
// matmul and the cell step still fused in one kernel. Any H runs; speed is secondary.
//
// Dimensions as in passes.cuh. Forward step s reads h_{t-1} from hbuf[s & 1] (h0 at
// s = 0) and writes hbuf[(s+1) & 1]; backward phase s reads d_gh of the phase before
// (the output tensor itself). fp32 h/c (dh/dc) live in `state`, each element touched by
// its owner thread only.
#pragma once
#include "passes.cuh"

namespace fusedrnn {

struct StepWorkspace {
  void* hbuf;     // (2, B, H) dtype: forward h exchanged between launches
  float* state;   // (2, B, H) fp32: h and c (backward: dh and dc)
};

// part[bb][g*U + u] = Σ_k x[bb][k] · w[(g*w_gs + u)*ldw + k]: a warp per (4 rows, unit),
// lanes split k, a butterfly shuffle reduces.
template <typename T, int RPU>
__device__ void matvec_fma(float* part, const T* x, int ldx, int nb, const T* w, int w_gs, int ldw, int nu, int K,
                           const StepGeometry& geo) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nq = ceil_div(nb, 4);
  for (int item = warp; item < nq * nu; item += kWarps) {
    const int bq = item / nu, u = item % nu;
    float acc[4][RPU];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int g = 0; g < RPU; ++g) acc[i][g] = 0.0f;
    for (int k = lane; k < K; k += 32) {
      float wv[RPU];
#pragma unroll
      for (int g = 0; g < RPU; ++g) wv[g] = to_f(w[(size_t)(g * w_gs + u) * ldw + k]);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int bb = min(bq * 4 + i, nb - 1);  // rows past nb re-read the last row; never stored
        const float xv = to_f(x[(size_t)bb * ldx + k]);
#pragma unroll
        for (int g = 0; g < RPU; ++g) acc[i][g] = fmaf(xv, wv[g], acc[i][g]);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int g = 0; g < RPU; ++g)
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) acc[i][g] += __shfl_xor_sync(0xffffffffu, acc[i][g], off);
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (bq * 4 + i < nb) {
#pragma unroll
          for (int g = 0; g < RPU; ++g) part[(bq * 4 + i) * geo.RP + g * geo.U + u] = acc[i][g];
        }
    }
  }
}

// The units [j0, j0 + nu) and batch rows [b_lo, b_hi) of one per-step CTA.
struct StepSlice {
  int j0, nu, b_lo, b_hi;
  __device__ StepSlice(const StepGeometry& geo, int B, int H)
      : j0(blockIdx.x * geo.U), nu(min(geo.U, H - j0)), b_lo(blockIdx.y * geo.rows), b_hi(min(B, b_lo + geo.rows)) {}
};

template <class Cell, typename T>
__global__ void __launch_bounds__(kThreads)
fwd_step_kernel(const typename FwdPass<Cell, T>::Params p, const StepGeometry geo, const StepWorkspace ws, int s) {
  constexpr int G = Cell::G, S = Cell::S;
  extern __shared__ __align__(128) unsigned char smem[];
  float* part = reinterpret_cast<float*>(smem);
  const StepSlice sl(geo, p.B, p.H);
  const int j0 = sl.j0, nu = sl.nu, b_lo = sl.b_lo, b_hi = sl.b_hi;
  const int t = p.reverse ? p.steps - 1 - s : s, H = p.H;
  const size_t BH = (size_t)p.B * H;
  const T* hb = static_cast<const T*>(ws.hbuf);
  const T* src = s == 0 ? p.h0 : hb + (s & 1) * BH;
  T* dst = static_cast<T*>(ws.hbuf) + ((s + 1) & 1) * BH;
  float* hstate = ws.state;
  float* cstate = ws.state + BH;
  for (int b0 = b_lo; b0 < b_hi; b0 += geo.BC) {
    const int nb = min(geo.BC, b_hi - b0);
    matvec_fma<T, G>(part, src + (size_t)b0 * H, H, nb, p.w + (size_t)j0 * H, H, H, nu, H, geo);
    __syncthreads();
    for (int idx = threadIdx.x; idx < nb * nu; idx += kThreads) {
      const int bb = idx / nu, u = idx % nu, b = b0 + bb, j = j0 + u;
      const size_t bj = (size_t)b * H + j, tb = (size_t)t * p.B + b;
      float h = s == 0 ? to_f(p.h0[bj]) : hstate[bj];
      float c = Cell::HAS_C ? (s == 0 ? to_f(p.c0[bj]) : cstate[bj]) : 0.0f;
      float out = 0.0f;
      if (p.lengths == nullptr || t < p.lengths[b]) {
        float gx[G], gh[G], sv[S], hn, cn;
#pragma unroll
        for (int g = 0; g < G; ++g) {
          gx[g] = to_f(p.gx[tb * G * H + g * H + j]);
          gh[g] = part[bb * geo.RP + g * geo.U + u] + (p.bias ? to_f(p.bias[g * H + j]) : 0.0f);
        }
        Cell::forward(gx, gh, h, c, &hn, &cn, sv);
        h = hn;
        c = cn;
        out = hn;
        if (p.saved != nullptr) {
#pragma unroll
          for (int q = 0; q < S; ++q) p.saved[(tb * S + q) * H + j] = sv[q];
        }
      }
      p.y[tb * H + j] = from_f<T>(out);
      hstate[bj] = h;
      if (Cell::HAS_C) cstate[bj] = c;
      dst[bj] = from_f<T>(h);
      if (s == p.steps - 1) {
        p.hT[bj] = from_f<T>(h);
        if (Cell::HAS_C) p.cT[bj] = from_f<T>(c);
      }
    }
    __syncthreads();  // part is reused by the next chunk
  }
}

// Phase s in [0, T]; phase T only finishes dh0/dc0.
template <class Cell, typename T>
__global__ void __launch_bounds__(kThreads)
bwd_step_kernel(const typename BwdPass<Cell, T>::Params p, const StepGeometry geo, const StepWorkspace ws, int s) {
  constexpr int G = Cell::G, S = Cell::S;
  extern __shared__ __align__(128) unsigned char smem[];
  float* part = reinterpret_cast<float*>(smem);
  const StepSlice sl(geo, p.B, p.H);
  const int j0 = sl.j0, nu = sl.nu, b_lo = sl.b_lo, b_hi = sl.b_hi;
  const int H = p.H, GH = G * H;
  const bool first = s == 0, final = s == p.steps, split = p.d_gh != p.d_gx;
  const int t = final ? 0 : (p.reverse ? s : p.steps - 1 - s);
  const int t_prev = p.reverse ? s - 1 : p.steps - s;  // the time of phase s - 1
  const T* src = first ? nullptr : p.d_gh + (size_t)t_prev * p.B * GH;
  float* dstate = ws.state;
  float* cstate = ws.state + (size_t)p.B * H;
  for (int b0 = b_lo; b0 < b_hi; b0 += geo.BC) {
    const int nb = min(geo.BC, b_hi - b0);
    if (!first) matvec_fma<T, 1>(part, src + (size_t)b0 * GH, GH, nb, p.wt + (size_t)j0 * GH, 0, GH, nu, GH, geo);
    __syncthreads();
    for (int idx = threadIdx.x; idx < nb * nu; idx += kThreads) {
      const int bb = idx / nu, u = idx % nu, b = b0 + bb, j = j0 + u;
      const size_t bj = (size_t)b * H + j;
      float dh = first ? to_f(p.dhT[bj]) : dstate[bj] + part[bb * geo.RP + u];
      const float dc = Cell::HAS_C ? (first ? to_f(p.dcT[bj]) : cstate[bj]) : 0.0f;
      if (final) {
        p.dh0[bj] = from_f<T>(dh);
        if (Cell::HAS_C) p.dc0[bj] = from_f<T>(dc);
        continue;
      }
      const size_t tb = (size_t)t * p.B + b;
      T* pgx = p.d_gx + tb * GH + j;
      T* pgh = p.d_gh + tb * GH + j;
      if (p.lengths == nullptr || t < p.lengths[b]) {
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
        dstate[bj] = dl;
        if (Cell::HAS_C) cstate[bj] = dcp;
      } else {
#pragma unroll
        for (int g = 0; g < G; ++g) {
          pgx[g * H] = from_f<T>(0.0f);
          if (split) pgh[g * H] = from_f<T>(0.0f);
        }
        dstate[bj] = dh;
        if (Cell::HAS_C) cstate[bj] = dc;
      }
    }
    __syncthreads();
  }
}

}  // namespace fusedrnn
