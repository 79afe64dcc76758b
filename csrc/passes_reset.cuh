// The GRU with its reset gate before the recurrent product (cells/gru_reset_before.cuh) as
// the persistent loop (persistent.cuh) sees it: two stages per step, both on the H-units, the
// second product depending on the first (like the LSTM projection's, passes_proj.cuh).
//   forward   stage 0: W_hr,z h_{t-1}  (X = h, U wide)        -> r, z; r ⊙ h_{t-1}
//             stage 1: W_hn (r ⊙ h)    (X = r ⊙ h, U wide)    -> n, h_t
//   backward  stage 0: dh_t = W_hr,zᵀ [dr, dz]_{t+1} + carried + dy_t (X: 2 segments of U)
//                      -> d(n_pre), d(z_pre)
//             stage 1: d(r ⊙ h) = W_hnᵀ d(n_pre)  (X = d(n_pre))  -> d(r_pre), the carried part
// Stage 0 of the forward keeps W_hh's r and z rows (2 per unit), stage 1 its n rows; the
// backward's stage 0 the columns of W_hhᵀ of r and z, stage 1 those of n. The forward's bias
// holds b_hr, b_hz at stage 0's rows and b_hn after them (at L.st[0].RP). d_gh == d_gx: the
// backward stores d_gx only. Padded steps keep h (and carry its gradient) as passes.cuh does.
#pragma once
#include "cells/gru_reset_before.cuh"
#include "passes_two_stage.cuh"

namespace fusedrnn {

template <typename T>
struct FwdResetPass : TwoStageFwd<GruResetBeforeCell, T> {
  using Base = TwoStageFwd<GruResetBeforeCell, T>;
  using typename Base::Cell, typename Base::Params;
  using Base::G, Base::S, Base::kDepth, Base::time_of;
  struct Regs {
    PairSlots p;
    float h[kPairsPerThread];   // the state (h_{t-1} until stage 1 of step t updates it)
    float z[kPairsPerThread];   // stage 0 -> stage 1: z, gx_n; a: r after stage 0, n after stage 1
    float xn[kPairsPerThread];
    float a[kPairsPerThread];
    T gx[kDepth][kPairsPerThread][G];  // the inputs of the next kDepth steps, as loaded
  };

  // stage 0: row g*U + u <- W_hh row g*H + j0 + u (g = r, z); stage 1: row u <- W_hh row 2H + j0 + u
  __device__ static int segments(int) { return 1; }
  __device__ static int seg_len(const Params& p, int) { return p.H; }
  __device__ static const T* weights(const Params& p, int) { return p.w; }
  __device__ static const T* weight_segment(const Params& p, const Layout& L, const Cta& c, int k, int lr, int) {
    if (k == 1) return lr < c.nu ? p.w + (size_t)(2 * p.H + c.j0 + lr) * p.H : nullptr;
    const int g = lr / L.U, u = lr % L.U;
    return (g < 2 && u < c.nu) ? p.w + (size_t)(g * p.H + c.j0 + u) * p.H : nullptr;
  }
  // b_hr, b_hz at stage 0's rows g*U + u, b_hn at L.st[0].RP + u (the plan sizes the region for both)
  __device__ static void load_bias(float* bias, const Params& p, const Layout& L, const Cta& c) {
    const int n0 = L.st[0].RP;
    for (int lr = threadIdx.x; lr < n0 + L.st[1].RP; lr += kThreads) {
      const int g = lr < n0 ? lr / L.U : 2, u = lr < n0 ? lr % L.U : lr - n0;
      bias[lr] = (p.bias != nullptr && g < G && u < c.nu) ? to_f(p.bias[g * p.H + c.j0 + u]) : 0.0f;
    }
  }
  __device__ static void prefetch(T (&buf)[kPairsPerThread][G], const Regs& r, const Params& p, const Cta& c, int i,
                                  int s) {
    Base::prefetch(buf, r.p, p, c, i, s);
  }
  template <class X>
  __device__ static void init(Regs& r, const Params& p, const Layout& L, const Cta& c, const X& ex) {
    r.p.init(L.U, c.nu, L.st[0].ppt, c, p.lengths, p.steps);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      r.h[i] = r.z[i] = r.xn[i] = r.a[i] = 0.0f;
      if (!r.p.ok[i]) continue;
      const T h0 = p.h0[r.p.at(i, c, p.H, c.j0)];
      r.h[i] = to_f(h0);
      ex.put(0, 0, 0, r.p.bb[i], r.p.u[i], h0);
#pragma unroll
      for (int b = 0; b < kDepth; ++b)
        if (b < p.steps) prefetch(r.gx[b], r, p, c, i, b);
    }
  }
  template <int Par, class X>
  __device__ static void pointwise(int k, Regs& r, const Params& p, const Layout& L, const Cta& c, const X& ex,
                                   const float* part, const float* bias, int s, bool, int round) {
    const int t = time_of(p, s);
    const bool more = s + 1 < p.steps, timed_out = *ex.abort != 0;  // results after a timeout: NaN
    if (k == 0) {  // r, z and the second product's operand r ⊙ h_{t-1}
      const auto& in = r.gx[Par % kDepth];
      const auto out = ex.target(round, 1);
#pragma unroll
      for (int i = 0; i < kPairsPerThread; ++i) {
        if (!slot_used(i, L.st[0])) break;
        if (!r.p.ok[i]) continue;
        const int bb = r.p.bb[i], u = r.p.u[i];
        float rh = 0.0f;  // past the sequence's end: unused (h is kept)
        if (t < r.p.len[i]) {
          const float pre_r = to_f(in[i][0]) + bias[u] + part_sum(part, L.st[0], L.BG, bb, u);
          const float pre_z = to_f(in[i][1]) + bias[L.U + u] + part_sum(part, L.st[0], L.BG, bb, L.U + u);
          rh = Cell::gates(pre_r, pre_z, r.h[i], &r.a[i], &r.z[i]);
          r.xn[i] = to_f(in[i][2]);
        }
        out.put(0, bb, u, from_f<T>(rh));
      }
      return;
    }
    const auto out = ex.target(round, 0);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {  // n and the new state
      if (!slot_used(i, L.st[1])) break;
      if (!r.p.ok[i]) continue;
      const int bb = r.p.bb[i], u = r.p.u[i];
      if (t < r.p.len[i]) {  // else h kept
        const float pre_n = r.xn[i] + bias[L.st[0].RP + u] + part_sum(part, L.st[1], L.BG, bb, u);
        const float hn = Cell::state(pre_n, r.z[i], r.h[i], &r.a[i]);
        r.h[i] = timed_out ? nan_f() : hn;
      }
      if (more) out.put(0, bb, u, from_f<T>(r.h[i]));
    }
  }
  // After stage k's publish: stage 0 the saved r, z, h_{t-1} and the input loads of step
  // s + kDepth (into the buffer this step consumed; gx_n waits in xn), stage 1 the saved n and y.
  template <int Par>
  __device__ static void outputs(int k, Regs& r, const Params& p, const Layout& L, const Cta& c, int s) {
    const int t = time_of(p, s);
    float* svt = p.saved != nullptr ? p.saved + (size_t)t * p.B * S * p.H : nullptr;
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      if (!slot_used(i, L.st[k])) break;
      if (!r.p.ok[i]) continue;
      const int j = c.j0 + r.p.u[i], row = c.b0 + r.p.bb[i];
      const bool live = t < r.p.len[i];
      if (k == 0) {
        if (live && svt != nullptr) {
          svt[(row * S + Cell::kR) * p.H + j] = r.a[i];
          svt[(row * S + Cell::kZ) * p.H + j] = r.z[i];
          svt[(row * S + Cell::kHPrev) * p.H + j] = r.h[i];
        }
        if (s + kDepth < p.steps) prefetch(r.gx[Par % kDepth], r, p, c, i, s + kDepth);
      } else {
        if (live && svt != nullptr) svt[(row * S + Cell::kN) * p.H + j] = r.a[i];
        p.y[((size_t)t * p.B + row) * p.ldy + j] = from_f<T>(live ? r.h[i] : 0.0f);
      }
    }
  }
  __device__ static void finish(const Regs& r, const Params& p, const Cta& c) {
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i)
      if (r.p.ok[i]) p.hT[r.p.at(i, c, p.H, c.j0)] = from_f<T>(r.h[i]);
  }
};

template <typename T>
struct BwdResetPass : TwoStageBwd<GruResetBeforeCell, T> {
  using Base = TwoStageBwd<GruResetBeforeCell, T>;
  using typename Base::Cell, typename Base::Params;
  using Base::G, Base::S, Base::kDepth, Base::time_of;
  struct Regs {
    PairSlots p;
    float dh[kPairsPerThread];   // the gradient carried to h_{t-1}; from stage 0 to 1: all that reaches h_t
    float dz[kPairsPerThread];   // stage 0 -> stage 1: d(z_pre), d(n_pre); d(r_pre) after stage 1
    float dn[kPairsPerThread];
    float dr[kPairsPerThread];
    T dy[kDepth][kPairsPerThread];
    float sv[kDepth][kPairsPerThread][S];
  };

  // stage 0: row u <- W_hhᵀ row j0 + u, segments g = r, z (H each); stage 1: its n segment
  __device__ static int segments(int k) { return k == 0 ? 2 : 1; }
  __device__ static int seg_len(const Params& p, int) { return p.H; }
  __device__ static const T* weights(const Params& p, int) { return p.wt; }
  __device__ static const T* weight_segment(const Params& p, const Layout&, const Cta& c, int k, int lr, int g) {
    return lr < c.nu ? p.wt + (size_t)(c.j0 + lr) * (G * p.H) + (size_t)(k == 0 ? g : 2) * p.H : nullptr;
  }
  // phase s's dy and saved values of pair i into buffer b
  __device__ static void prefetch(Regs& r, int b, const Params& p, const Cta& c, int i, int s) {
    const int t = time_of(p, s);
    if (t < r.p.len[i]) {
      const size_t tb = (size_t)t * p.B + c.b0 + r.p.bb[i];
      const int j = c.j0 + r.p.u[i];
      r.dy[b][i] = __ldg(p.dy + tb * p.ldy + j);
#pragma unroll
      for (int q = 0; q < S; ++q) r.sv[b][i][q] = __ldg(p.saved + (tb * S + q) * p.H + j);
    }
  }
  template <class X>
  __device__ static void init(Regs& r, const Params& p, const Layout& L, const Cta& c, const X&) {
    r.p.init(L.U, c.nu, L.st[0].ppt, c, p.lengths, p.steps);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      r.dh[i] = r.dz[i] = r.dn[i] = r.dr[i] = 0.0f;
      if (!r.p.ok[i]) continue;
      r.dh[i] = to_f(p.dhT[r.p.at(i, c, p.H, c.j0)]);
#pragma unroll
      for (int b = 0; b < kDepth; ++b)
        if (b < p.steps) prefetch(r, b, p, c, i, b);
    }
  }
  template <int Par, class X>
  __device__ static void pointwise(int k, Regs& r, const Params& p, const Layout& L, const Cta& c, const X& ex,
                                   const float* part, const float*, int s, bool consumed, int round) {
    const bool timed_out = *ex.abort != 0;  // results after a timeout: NaN
    const int t = s < p.steps ? time_of(p, s) : 0;
    if (k == 0) {  // all that reaches h_t, then d(n_pre) for stage 1 and d(z_pre)
      const auto out = ex.target(round, 1);
#pragma unroll
      for (int i = 0; i < kPairsPerThread; ++i) {
        if (!slot_used(i, L.st[0])) break;
        if (!r.p.ok[i]) continue;
        const int bb = r.p.bb[i], u = r.p.u[i];
        const float ps = part_sum(part, L.st[0], L.BG, bb, u);
        float dh = r.dh[i] + (consumed ? ps : 0.0f);
        if (timed_out) dh = nan_f();
        r.dh[i] = dh;  // the last phase: what reaches h0, stored by finish(); past a sequence's end: passed on
        if (s == p.steps) continue;
        r.dn[i] = r.dz[i] = 0.0f;
        if (t < r.p.len[i]) {
          r.dh[i] = dh + to_f(r.dy[Par % kDepth][i]);
          Cell::grad_nz(r.sv[Par % kDepth][i], r.dh[i], &r.dn[i], &r.dz[i]);
        }
        out.put(0, bb, u, from_f<T>(r.dn[i]));
      }
      return;
    }
    const auto out = ex.target(round, 0);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {  // d(r ⊙ h) -> d(r_pre) and the carried gradient
      if (!slot_used(i, L.st[1])) break;
      if (!r.p.ok[i]) continue;
      const int bb = r.p.bb[i], u = r.p.u[i];
      r.dr[i] = 0.0f;
      if (t < r.p.len[i]) {  // else the state passed through unchanged: dh is carried as it is
        const float drh = timed_out ? nan_f() : part_sum(part, L.st[1], L.BG, bb, u);
        r.dh[i] = Cell::grad_r(r.sv[Par % kDepth][i], r.dh[i], drh, &r.dr[i]);
      }
      out.put(0, bb, u, from_f<T>(r.dr[i]));
      out.put(1, bb, u, from_f<T>(r.dz[i]));
    }
  }
  // After stage k's publish: stage 0 d_gx's z and n columns, stage 1 its r column and the loads
  // of phase s + kDepth (into the buffers this phase consumed).
  template <int Par>
  __device__ static void outputs(int k, Regs& r, const Params& p, const Layout& L, const Cta& c, int s) {
    if (s == p.steps) return;
    T* dgxt = p.d_gx + (size_t)time_of(p, s) * p.B * p.ldg;
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      if (!slot_used(i, L.st[k])) break;
      if (!r.p.ok[i]) continue;
      const int at = (c.b0 + r.p.bb[i]) * p.ldg + c.j0 + r.p.u[i];
      if (k == 0) {
        dgxt[at + p.H] = from_f<T>(r.dz[i]);
        dgxt[at + 2 * p.H] = from_f<T>(r.dn[i]);
      } else {
        dgxt[at] = from_f<T>(r.dr[i]);
        if (s + kDepth < p.steps) prefetch(r, Par % kDepth, p, c, i, s + kDepth);
      }
    }
  }
  __device__ static void finish(const Regs& r, const Params& p, const Cta& c) {
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i)
      if (r.p.ok[i]) p.dh0[r.p.at(i, c, p.H, c.j0)] = from_f<T>(r.dh[i]);
  }
};

}  // namespace fusedrnn
