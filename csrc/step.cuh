// The per-step fallback (tier 4): one launch per step and stage for sizes whose weights
// do not fit on chip (or when a persistent launch is refused); the directions of a
// two-direction call run one after the other. Small CTAs over (4 units, batch rows);
// weights and the exchanged vector read from global memory (L2) by FMA, the matmul and
// the pointwise still fused in one kernel. Any H runs; speed is secondary.
//
// Dimensions as in params.cuh. Forward step s reads h_{t-1} from hbuf[s & 1] (h0 at s = 0)
// and writes hbuf[(s+1) & 1]; with a projection the cell kernel writes m to mbuf and the
// projection kernel (P-units) reads it. Backward phase s reads d_gh of the phase before
// (the output tensor itself); with a projection the dh kernel (P-units) writes dh to mbuf
// and the cell kernel reads it. fp32 state lives in hstate (B, P: h, or the carried dh)
// and cstate (B, H: c, or dc), each element touched by its owner thread only.
#pragma once
#include "passes_proj.cuh"

namespace fusedrnn {

struct StepWorkspace {
  void* hbuf;      // (2, B, P) dtype: forward h exchanged between launches
  void* mbuf;      // (B, max(H, P)) dtype: m (forward) or dh (backward) between a projection's stages
  float* hstate;   // (B, P) fp32: h (backward: the carried dh)
  float* cstate;   // (B, H) fp32: c (backward: dc)
};

// part[bb][g*U + u] = Σ_k x[bb][k] · w[(g*w_gs + u)*ldw + k]: a warp per (4 rows, unit),
// lanes split k, a butterfly shuffle reduces. kMask: x[bb][k] times xm[bb*ldx + k] (recurrent
// dropout's dm ⊙ h, the mask laid out like x).
template <typename T, int RPU, bool kMask = false>
__device__ void matvec_fma(float* part, const T* x, int ldx, int nb, const T* w, int w_gs, int ldw, int nu, int K,
                           const StepGeometry& geo, const float* xm = nullptr) {
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
        float xv = to_f(x[(size_t)bb * ldx + k]);
        if constexpr (kMask) xv *= xm[(size_t)bb * ldx + k];
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

// The units [j0, j0 + nu) of `units` and batch rows [b_lo, b_hi) of one per-step CTA.
struct StepSlice {
  int j0, nu, b_lo, b_hi;
  __device__ StepSlice(const StepGeometry& geo, int B, int units)
      : j0(blockIdx.x * geo.U), nu(min(geo.U, units - j0)), b_lo(blockIdx.y * geo.rows),
        b_hi(min(B, b_lo + geo.rows)) {}
};

// A slice's batch rows, BC at a time: product(b0, nb) writes the chunk's recurrent product to
// part; after a barrier unit(bb, u, b, j) runs once per (row, unit) of the chunk (bb, u: its
// place in part); a barrier then frees part for the next chunk.
template <class Product, class Unit>
__device__ __forceinline__ void for_each_chunk(const StepSlice& sl, const StepGeometry& geo, Product&& product,
                                               Unit&& unit) {
  for (int b0 = sl.b_lo; b0 < sl.b_hi; b0 += geo.BC) {
    const int nb = min(geo.BC, sl.b_hi - b0);
    product(b0, nb);
    __syncthreads();
    for (int idx = threadIdx.x; idx < nb * sl.nu; idx += kThreads) {
      const int bb = idx / sl.nu, u = idx % sl.nu;
      unit(bb, u, b0 + bb, sl.j0 + u);
    }
    __syncthreads();
  }
}

// A forward step's h at (row, unit) bj: y (out: zero past the sequence's end), the fp32 state,
// the next launch's exchange buffer dst and, at the last step, hT.
template <typename T>
__device__ __forceinline__ void put_state(const FwdParams<T>& p, const StepWorkspace& ws, T* dst, size_t bj, size_t tb,
                                          int j, int s, float h, float out) {
  p.y[tb * p.ldy + j] = from_f<T>(out);
  ws.hstate[bj] = h;
  dst[bj] = from_f<T>(h);
  if (s == p.steps - 1) p.hT[bj] = from_f<T>(h);
}

// Forward, the cell on the H-units: gates = W_hh h_{t-1} (K = P) -> c, and h (no projection:
// y, hT, the next h) or m (projection: for the projection kernel).
template <class Pass>
__global__ void __launch_bounds__(kThreads, 2)
fwd_step_kernel(const typename Pass::Params pa, const StepGeometry geo, const StepWorkspace ws, int s, int d) {
  using T = typename Pass::Elem;
  using Cell = typename Pass::Cell;
  constexpr int G = Cell::G, S = Cell::S;
  constexpr bool kProj = Pass::kStages == 2;
  FUSEDRNN_DYNAMIC_SMEM(smem);
  float* part = reinterpret_cast<float*>(smem);
  const typename Pass::Params p = Pass::direction(pa, d);
  const StepSlice sl(geo, p.B, p.H);
  const int j0 = sl.j0, nu = sl.nu;
  const int t = p.reverse ? p.steps - 1 - s : s, H = p.H, P = p.P;
  const size_t BP = (size_t)p.B * P;
  const T* hb = static_cast<const T*>(ws.hbuf);
  const T* src = s == 0 ? p.h0 : hb + (s & 1) * BP;
  T* dst = static_cast<T*>(ws.hbuf) + ((s + 1) & 1) * BP;
  // the regularised pass with recurrent dropout: the product takes dm ⊙ h_{t-1}
  constexpr bool kZ = Pass::kMasked;
  const bool drop = kZ && p.dm != nullptr;
  for_each_chunk(sl, geo, [&](int b0, int nb) {
    if (drop)
      matvec_fma<T, G, kZ>(part, src + (size_t)b0 * P, P, nb, p.w + (size_t)j0 * P, H, P, nu, P, geo,
                           p.dm + (size_t)b0 * P);
    else
      matvec_fma<T, G>(part, src + (size_t)b0 * P, P, nb, p.w + (size_t)j0 * P, H, P, nu, P, geo);
  }, [&](int bb, int u, int b, int j) {
    const size_t bj = (size_t)b * H + j, tb = (size_t)t * p.B + b;
    float h = kProj ? 0.0f : (s == 0 ? to_f(p.h0[bj]) : ws.hstate[bj]);
    float c = Cell::HAS_C ? (s == 0 ? to_f(p.c0[bj]) : ws.cstate[bj]) : 0.0f;
    float out = 0.0f;
    if (p.lengths == nullptr || t < p.lengths[b]) {
      float gx[G], gh[G], sv[S], hn, cn;
#pragma unroll
      for (int g = 0; g < G; ++g) {
        gx[g] = to_f(p.gx[tb * p.ldg + g * H + j]);
        gh[g] = part[bb * geo.RP + g * geo.U + u] + (p.bias ? to_f(p.bias[g * H + j]) : 0.0f);
      }
      Cell::forward(gx, gh, h, c, &hn, &cn, sv);
      if constexpr (kZ) {  // zoneout, from the unmasked previous state
        const size_t at = tb * p.ldy + j;  // P == H: a mask row is ldy wide (params.cuh)
        const float zh = p.zh != nullptr ? p.zh[at] : 0.0f, zc = Cell::HAS_C && p.zc != nullptr ? p.zc[at] : 0.0f;
        hn = zh * h + (1.0f - zh) * hn;
        cn = zc * c + (1.0f - zc) * cn;
      }
      h = hn;
      c = cn;
      out = hn;
      if (p.saved != nullptr) {
#pragma unroll
        for (int q = 0; q < S; ++q) p.saved[(tb * S + q) * H + j] = sv[q];
      }
    }
    if (Cell::HAS_C) ws.cstate[bj] = c;
    if (Cell::HAS_C && s == p.steps - 1) p.cT[bj] = from_f<T>(c);
    if (kProj) {  // m for the projection kernel (zero past the sequence's end: unused there)
      static_cast<T*>(ws.mbuf)[bj] = from_f<T>(out);
      if (p.m != nullptr) p.m[tb * H + j] = out;
      return;
    }
    put_state(p, ws, dst, bj, tb, j, s, h, out);
  });
}

// Forward, the projection on the P-units: h_t = W_hr m_t (K = H) -> y, hT, the next h.
template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
fwd_proj_step_kernel(const FwdParams<T> pa, const StepGeometry geo, const StepWorkspace ws, int s, int d) {
  FUSEDRNN_DYNAMIC_SMEM(smem);
  float* part = reinterpret_cast<float*>(smem);
  const FwdParams<T> p = FwdProjPass<T>::direction(pa, d);
  const StepSlice sl(geo, p.B, p.P);
  const int j0 = sl.j0, nu = sl.nu;
  const int t = p.reverse ? p.steps - 1 - s : s, H = p.H, P = p.P;
  T* dst = static_cast<T*>(ws.hbuf) + ((s + 1) & 1) * (size_t)p.B * P;
  const T* m = static_cast<const T*>(ws.mbuf);
  for_each_chunk(sl, geo, [&](int b0, int nb) {
    matvec_fma<T, 1>(part, m + (size_t)b0 * H, H, nb, p.w_hr + (size_t)j0 * H, 0, H, nu, H, geo);
  }, [&](int bb, int u, int b, int j) {
    const size_t bj = (size_t)b * P + j, tb = (size_t)t * p.B + b;
    float h = s == 0 ? to_f(p.h0[bj]) : ws.hstate[bj];
    float out = 0.0f;
    if (p.lengths == nullptr || t < p.lengths[b]) h = out = part[bb * geo.RP + u];
    put_state(p, ws, dst, bj, tb, j, s, h, out);
  });
}

// Backward phase s in [0, T] on the H-units; phase T only finishes dh0/dc0. No projection:
// dh = dstate + W_hhᵀ d_gh of phase s - 1 (K = G*H) -> the cell backward. Projection: dm =
// W_hrᵀ dh (K = P, dh from the dh kernel) -> the cell backward; phase T writes dc0 only.
template <class Pass>
__global__ void __launch_bounds__(kThreads, 2)
bwd_step_kernel(const typename Pass::Params pa, const StepGeometry geo, const StepWorkspace ws, int s, int d) {
  using T = typename Pass::Elem;
  using Cell = typename Pass::Cell;
  constexpr int G = Cell::G, S = Cell::S;
  constexpr bool kProj = Pass::kStages == 2;
  FUSEDRNN_DYNAMIC_SMEM(smem);
  float* part = reinterpret_cast<float*>(smem);
  const typename Pass::Params p = Pass::direction(pa, d);
  const StepSlice sl(geo, p.B, p.H);
  const int j0 = sl.j0, nu = sl.nu;
  const int H = p.H, GH = G * H, P = p.P;
  const bool first = s == 0, final = s == p.steps, split = p.d_gh != p.d_gx;
  const int t = final ? 0 : (p.reverse ? s : p.steps - 1 - s);
  const int t_prev = p.reverse ? s - 1 : p.steps - s;  // the time of phase s - 1
  float* dstate = ws.hstate;
  float* cstate = ws.cstate;
  for_each_chunk(sl, geo, [&](int b0, int nb) {
    if (kProj && !final) {
      matvec_fma<T, 1>(part, static_cast<const T*>(ws.mbuf) + (size_t)b0 * P, P, nb, p.wrt + (size_t)j0 * P, 0, P,
                       nu, P, geo);
    } else if (!kProj && !first) {
      matvec_fma<T, 1>(part, p.d_gh + (size_t)t_prev * p.B * p.ldg + (size_t)b0 * p.ldg, p.ldg, nb,
                       p.wt + (size_t)j0 * GH, 0, GH, nu, GH, geo);
    }
  }, [&](int bb, int u, int b, int j) {
    const size_t bj = (size_t)b * H + j;
    auto prod = [&]() {  // the product's gradient (no projection); it took dm ⊙ h_{t-1} when masked
      float v = part[bb * geo.RP + u];
      if constexpr (Pass::kMasked) {
        if (p.dm != nullptr) v *= p.dm[bj];
      }
      return v;
    };
    float dh = kProj ? (final ? 0.0f : part[bb * geo.RP + u])
                     : (first ? to_f(p.dhT[bj]) : dstate[bj] + prod());
    const float dc = Cell::HAS_C ? (first ? to_f(p.dcT[bj]) : cstate[bj]) : 0.0f;
    if (final) {
      if (!kProj) p.dh0[bj] = from_f<T>(dh);
      if (Cell::HAS_C) p.dc0[bj] = from_f<T>(dc);
      return;
    }
    const size_t tb = (size_t)t * p.B + b;
    T* pgx = p.d_gx + tb * p.ldg + j;
    T* pgh = p.d_gh + tb * p.ldg + j;
    if (p.lengths == nullptr || t < p.lengths[b]) {
      if (!kProj) dh += to_f(p.dy[tb * p.ldy + j]);
      float sv[S], dgx[G], dgh[G], dl, dcp;
#pragma unroll
      for (int q = 0; q < S; ++q) sv[q] = p.saved[(tb * S + q) * H + j];
      if constexpr (Pass::kMasked) {  // zoneout: the cell's part, and the part that bypasses it
        const size_t at = tb * p.ldy + j;  // P == H: a mask row is ldy wide (params.cuh)
        const float zh = p.zh != nullptr ? p.zh[at] : 0.0f, zc = Cell::HAS_C && p.zc != nullptr ? p.zc[at] : 0.0f;
        Cell::backward(sv, (1.0f - zh) * dh, (1.0f - zc) * dc, dgx, dgh, &dl, &dcp);
        dl += zh * dh;
        dcp += zc * dc;
      } else {
        Cell::backward(sv, dh, dc, dgx, dgh, &dl, &dcp);
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
        pgx[g * H] = from_f<T>(dgx[g]);
        if (split) pgh[g * H] = from_f<T>(dgh[g]);
      }
      if (!kProj) dstate[bj] = dl;
      if (Cell::HAS_C) cstate[bj] = dcp;
    } else {
#pragma unroll
      for (int g = 0; g < G; ++g) {
        pgx[g * H] = from_f<T>(0.0f);
        if (split) pgh[g * H] = from_f<T>(0.0f);
      }
      if (!kProj) dstate[bj] = dh;
      if (Cell::HAS_C) cstate[bj] = dc;
    }
  });
}

// Backward phase s in [0, T] of a projection, the P-units: dh = dstate + W_hhᵀ d_gates of
// phase s - 1 (K = G*H) + dy -> mbuf (for the cell kernel) and p.dh (for dW_hr); phase T: dh0.
template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
bwd_proj_dh_step_kernel(const BwdParams<T> pa, const StepGeometry geo, const StepWorkspace ws, int s, int d) {
  FUSEDRNN_DYNAMIC_SMEM(smem);
  float* part = reinterpret_cast<float*>(smem);
  const BwdParams<T> p = BwdProjPass<T>::direction(pa, d);
  const StepSlice sl(geo, p.B, p.P);
  const int j0 = sl.j0, nu = sl.nu;
  const int GH = LstmCell::G * p.H, P = p.P;
  const bool first = s == 0, final = s == p.steps;
  const int t = final ? 0 : (p.reverse ? s : p.steps - 1 - s);
  const int t_prev = p.reverse ? s - 1 : p.steps - s;
  for_each_chunk(sl, geo, [&](int b0, int nb) {
    if (!first)
      matvec_fma<T, 1>(part, p.d_gx + (size_t)t_prev * p.B * p.ldg + (size_t)b0 * p.ldg, p.ldg, nb,
                       p.wt + (size_t)j0 * GH, 0, GH, nu, GH, geo);
  }, [&](int bb, int u, int b, int j) {
    const size_t bj = (size_t)b * P + j;
    const float dh = first ? to_f(p.dhT[bj]) : ws.hstate[bj] + part[bb * geo.RP + u];
    if (final) {
      p.dh0[bj] = from_f<T>(dh);
      return;
    }
    const size_t tb = (size_t)t * p.B + b;
    float sent = 0.0f;
    if (p.lengths == nullptr || t < p.lengths[b]) {
      sent = dh + to_f(p.dy[tb * p.ldy + j]);
      ws.hstate[bj] = 0.0f;
    } else {
      ws.hstate[bj] = dh;
    }
    p.dh[tb * P + j] = sent;
    static_cast<T*>(ws.mbuf)[bj] = from_f<T>(sent);
  });
}

}  // namespace fusedrnn
