// The per-step fallback (step.cuh) of the GRU with its reset gate before the recurrent
// product (passes_reset.cuh): two launches per step, both over the H-units.
//   forward   gates kernel: W_hr,z h_{t-1} -> r, z; r ⊙ h_{t-1} to mbuf (dtype), z to cstate (fp32)
//             state kernel: W_hn (r ⊙ h) from mbuf -> n, h_t (y, hT, the next h)
//   backward  dh kernel:    dh = dstate + W_hr,zᵀ [dr, dz] of phase s - 1 (the d_gx tensor's r, z
//                           columns) + dy -> d(z_pre), d(n_pre) into d_gx; dstate = dh
//             r kernel:     d(r ⊙ h) = W_hnᵀ d(n_pre) (d_gx's n columns of this phase) -> d(r_pre),
//                           dstate = the part carried to h_{t-1}; phase T: nothing (dh0 is the dh kernel's)
#pragma once
#include "passes_reset.cuh"
#include "step.cuh"

namespace fusedrnn {

template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
fwd_reset_gates_step_kernel(const FwdParams<T> pa, const StepGeometry geo, const StepWorkspace ws, int s, int d) {
  using Cell = GruResetBeforeCell;
  constexpr int S = Cell::S;
  FUSEDRNN_DYNAMIC_SMEM(smem);
  float* part = reinterpret_cast<float*>(smem);
  const FwdParams<T> p = FwdResetPass<T>::direction(pa, d);
  const StepSlice sl(geo, p.B, p.H);
  const int t = p.reverse ? p.steps - 1 - s : s, H = p.H;
  const size_t BH = (size_t)p.B * H;
  const T* src = s == 0 ? p.h0 : static_cast<const T*>(ws.hbuf) + (s & 1) * BH;
  T* rh_out = static_cast<T*>(ws.mbuf);
  for_each_chunk(sl, geo, [&](int b0, int nb) {
    matvec_fma<T, 2>(part, src + (size_t)b0 * H, H, nb, p.w + (size_t)sl.j0 * H, H, H, sl.nu, H, geo);
  }, [&](int bb, int u, int b, int j) {
    const size_t bj = (size_t)b * H + j, tb = (size_t)t * p.B + b;
    const float h = s == 0 ? to_f(p.h0[bj]) : ws.hstate[bj];
    float rh = 0.0f;  // past the sequence's end: unused (h is kept)
    if (p.lengths == nullptr || t < p.lengths[b]) {
      float pre[2];
#pragma unroll
      for (int g = 0; g < 2; ++g)
        pre[g] = to_f(p.gx[tb * p.ldg + g * H + j]) + part[bb * geo.RP + g * geo.U + u] +
                 (p.bias ? to_f(p.bias[g * H + j]) : 0.0f);
      float r, z;
      rh = Cell::gates(pre[0], pre[1], h, &r, &z);
      ws.cstate[bj] = z;
      if (p.saved != nullptr) {
        p.saved[(tb * S + Cell::kR) * H + j] = r;
        p.saved[(tb * S + Cell::kZ) * H + j] = z;
        p.saved[(tb * S + Cell::kHPrev) * H + j] = h;
      }
    }
    rh_out[bj] = from_f<T>(rh);
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
fwd_reset_state_step_kernel(const FwdParams<T> pa, const StepGeometry geo, const StepWorkspace ws, int s, int d) {
  using Cell = GruResetBeforeCell;
  constexpr int S = Cell::S;
  FUSEDRNN_DYNAMIC_SMEM(smem);
  float* part = reinterpret_cast<float*>(smem);
  const FwdParams<T> p = FwdResetPass<T>::direction(pa, d);
  const StepSlice sl(geo, p.B, p.H);
  const int t = p.reverse ? p.steps - 1 - s : s, H = p.H;
  const size_t BH = (size_t)p.B * H;
  T* dst = static_cast<T*>(ws.hbuf) + ((s + 1) & 1) * BH;
  const T* rh = static_cast<const T*>(ws.mbuf);
  for_each_chunk(sl, geo, [&](int b0, int nb) {
    matvec_fma<T, 1>(part, rh + (size_t)b0 * H, H, nb, p.w + (size_t)(2 * H + sl.j0) * H, 0, H, sl.nu, H, geo);
  }, [&](int bb, int u, int b, int j) {
    const size_t bj = (size_t)b * H + j, tb = (size_t)t * p.B + b;
    float h = s == 0 ? to_f(p.h0[bj]) : ws.hstate[bj];
    float out = 0.0f;
    if (p.lengths == nullptr || t < p.lengths[b]) {
      const float pre_n = to_f(p.gx[tb * p.ldg + 2 * H + j]) + part[bb * geo.RP + u] +
                          (p.bias ? to_f(p.bias[2 * H + j]) : 0.0f);
      float n;
      h = out = Cell::state(pre_n, ws.cstate[bj], h, &n);
      if (p.saved != nullptr) p.saved[(tb * S + Cell::kN) * H + j] = n;
    }
    put_state(p, ws, dst, bj, tb, j, s, h, out);
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
bwd_reset_dh_step_kernel(const BwdParams<T> pa, const StepGeometry geo, const StepWorkspace ws, int s, int d) {
  using Cell = GruResetBeforeCell;
  constexpr int S = Cell::S;
  FUSEDRNN_DYNAMIC_SMEM(smem);
  float* part = reinterpret_cast<float*>(smem);
  const BwdParams<T> p = BwdResetPass<T>::direction(pa, d);
  const StepSlice sl(geo, p.B, p.H);
  const int H = p.H, GH = Cell::G * H;
  const bool first = s == 0, final = s == p.steps;
  const int t = final ? 0 : (p.reverse ? s : p.steps - 1 - s);
  const int t_prev = p.reverse ? s - 1 : p.steps - s;  // the time of phase s - 1
  for_each_chunk(sl, geo, [&](int b0, int nb) {
    if (!first)  // K = 2H: the r and z columns of d_gx (phase s - 1) against those of W_hhᵀ
      matvec_fma<T, 1>(part, p.d_gx + (size_t)t_prev * p.B * p.ldg + (size_t)b0 * p.ldg, p.ldg, nb,
                       p.wt + (size_t)sl.j0 * GH, 0, GH, sl.nu, 2 * H, geo);
  }, [&](int bb, int u, int b, int j) {
    const size_t bj = (size_t)b * H + j;
    float dh = first ? to_f(p.dhT[bj]) : ws.hstate[bj] + part[bb * geo.RP + u];
    if (final) {
      p.dh0[bj] = from_f<T>(dh);
      return;
    }
    const size_t tb = (size_t)t * p.B + b;
    T* pgx = p.d_gx + tb * p.ldg + j;
    float dn = 0.0f, dz = 0.0f;
    if (p.lengths == nullptr || t < p.lengths[b]) {
      dh += to_f(p.dy[tb * p.ldy + j]);
      float sv[S];
#pragma unroll
      for (int q = 0; q < S; ++q) sv[q] = p.saved[(tb * S + q) * H + j];
      Cell::grad_nz(sv, dh, &dn, &dz);
    } else {
      pgx[0] = from_f<T>(0.0f);  // the r kernel writes it on live steps only
    }
    pgx[H] = from_f<T>(dz);
    pgx[2 * H] = from_f<T>(dn);
    ws.hstate[bj] = dh;
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
bwd_reset_r_step_kernel(const BwdParams<T> pa, const StepGeometry geo, const StepWorkspace ws, int s, int d) {
  using Cell = GruResetBeforeCell;
  constexpr int S = Cell::S;
  FUSEDRNN_DYNAMIC_SMEM(smem);
  float* part = reinterpret_cast<float*>(smem);
  const BwdParams<T> p = BwdResetPass<T>::direction(pa, d);
  if (s == p.steps) return;  // phase T: dh0 only (the dh kernel's)
  const StepSlice sl(geo, p.B, p.H);
  const int H = p.H, GH = Cell::G * H;
  const int t = p.reverse ? s : p.steps - 1 - s;
  const T* dn = p.d_gx + (size_t)t * p.B * p.ldg + 2 * H;  // this phase's d(n_pre), from the dh kernel
  for_each_chunk(sl, geo, [&](int b0, int nb) {
    matvec_fma<T, 1>(part, dn + (size_t)b0 * p.ldg, p.ldg, nb, p.wt + (size_t)sl.j0 * GH + 2 * H, 0, GH, sl.nu, H,
                     geo);
  }, [&](int bb, int u, int b, int j) {
    if (p.lengths != nullptr && t >= p.lengths[b]) return;  // dstate carried as the dh kernel left it
    const size_t bj = (size_t)b * H + j, tb = (size_t)t * p.B + b;
    float sv[S], dr;
#pragma unroll
    for (int q = 0; q < S; ++q) sv[q] = p.saved[(tb * S + q) * H + j];
    ws.hstate[bj] = Cell::grad_r(sv, ws.hstate[bj], part[bb * geo.RP + u], &dr);
    p.d_gx[tb * p.ldg + j] = from_f<T>(dr);
  });
}

}  // namespace fusedrnn
