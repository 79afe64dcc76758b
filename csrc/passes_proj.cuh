// The LSTM with a projection (proj_size P < H) as the persistent loop sees it: two stages
// per step (layout.h). A CTA owns H-units [j0, j0 + U) (the cell: c, the gates) and
// P-units [jp0, jp0 + UP) (the projected state h, P wide, which the recurrence feeds back).
//   forward   stage 0: gates = W_hh h_{t-1} (X = h)  -> c_t, m_t = o ⊙ tanh(c_t)   (H-units)
//             stage 1: h_t = W_hr m_t       (X = m)  -> y_t, h_t                    (P-units)
//   backward  stage 0: dh_t = W_hhᵀ d_gates_{t+1} + (dy_t or the carried gradient)  (P-units)
//             stage 1: dm_t = W_hrᵀ dh_t    (X = dh) -> cell backward, d_gates_t    (H-units)
// The backward writes dh_t (fp32, zero at padded steps) and the forward m_t (fp32, zero at
// padded steps): dW_hr = Σ_t dh_tᵀ m_t is one GEMM outside the loop (fusedrnn/ops/cuda.py).
// Padded steps keep c and h (and carry their gradients) exactly as passes.cuh does.
#pragma once
#include "cells/lstm.cuh"
#include "passes_two_stage.cuh"

namespace fusedrnn {

template <typename T>
struct FwdProjPass : TwoStageFwd<LstmCell, T> {
  using Base = TwoStageFwd<LstmCell, T>;
  using typename Base::Cell, typename Base::Params;
  using Base::G, Base::S, Base::kDepth, Base::time_of;
  struct Regs {
    PairSlots ph, pp;  // (row, H-unit) and (row, P-unit) pairs
    float c[kPairsPerThread], h[kPairsPerThread];
    T gx[kDepth][kPairsPerThread][G];  // the inputs of the next kDepth steps, as loaded (passes.cuh)
  };

  // stage 0: row g*U + u <- W_hh row g*H + j0 + u (P wide); stage 1: row up <- W_hr row jp0 + up (H wide)
  __device__ static int segments(int) { return 1; }
  __device__ static int seg_len(const Params& p, int k) { return k == 0 ? p.P : p.H; }
  __device__ static const T* weights(const Params& p, int k) { return k == 0 ? p.w : p.w_hr; }
  __device__ static const T* weight_segment(const Params& p, const Layout& L, const Cta& c, int k, int lr, int) {
    if (k == 1) return lr < c.np ? p.w_hr + (size_t)(c.jp0 + lr) * p.H : nullptr;
    const int g = lr / L.U, u = lr % L.U;
    return (g < G && u < c.nu) ? p.w + (size_t)(g * p.H + c.j0 + u) * p.P : nullptr;
  }
  __device__ static void load_bias(float* bias, const Params& p, const Layout& L, const Cta& c) {
    FwdPass<Cell, T>::load_bias(bias, p, L, c);
  }
  __device__ static void prefetch(T (&buf)[kPairsPerThread][G], const Regs& r, const Params& p, const Cta& c, int i,
                                  int s) {
    Base::prefetch(buf, r.ph, p, c, i, s);
  }
  template <class X>
  __device__ static void init(Regs& r, const Params& p, const Layout& L, const Cta& c, const X& ex) {
    r.ph.init(L.U, c.nu, L.st[0].ppt, c, p.lengths, p.steps);
    r.pp.init(L.UP, c.np, L.st[1].ppt, c, p.lengths, p.steps);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      r.c[i] = r.h[i] = 0.0f;
      if (r.ph.ok[i]) {
        r.c[i] = to_f(p.c0[r.ph.at(i, c, p.H, c.j0)]);
#pragma unroll
        for (int b = 0; b < kDepth; ++b)
          if (b < p.steps) prefetch(r.gx[b], r, p, c, i, b);
      }
      if (r.pp.ok[i]) {
        const T h0 = p.h0[r.pp.at(i, c, p.P, c.jp0)];
        r.h[i] = to_f(h0);
        ex.put(0, 0, 0, r.pp.bb[i], r.pp.u[i], h0);
      }
    }
  }
  template <int Par, class X>
  __device__ static void pointwise(int k, Regs& r, const Params& p, const Layout& L, const Cta& c, const X& ex,
                                   const float* part, const float* bias, int s, bool, int round) {
    const int t = time_of(p, s);
    const bool more = s + 1 < p.steps, timed_out = *ex.abort != 0;  // results after a timeout: NaN
    if (k == 0) {  // the cell on the H-units: c_t and m_t, from the inputs of the step's parity
      const auto& in = r.gx[Par % kDepth];
#pragma unroll
      for (int i = 0; i < kPairsPerThread; ++i) {
        if (!r.ph.ok[i]) continue;
        const int bb = r.ph.bb[i], u = r.ph.u[i], j = c.j0 + u;
        const size_t tb = (size_t)t * p.B + c.b0 + bb;
        float m = 0.0f;  // past the sequence's end: c kept, m unused (its h is not taken)
        if (t < r.ph.len[i]) {
          float gx[G], gh[G], sv[S], cn;
#pragma unroll
          for (int g = 0; g < G; ++g) {
            gx[g] = to_f(in[i][g]);
            gh[g] = bias[g * L.U + u] + part_sum(part, L.st[0], L.BG, bb, g * L.U + u);
          }
          Cell::forward(gx, gh, 0.0f, r.c[i], &m, &cn, sv);
          r.c[i] = cn;
          if (timed_out) m = nan_f();
          if (p.saved != nullptr) {
#pragma unroll
            for (int q = 0; q < S; ++q) p.saved[(tb * S + q) * p.H + j] = sv[q];
          }
        }
        if (p.m != nullptr) p.m[tb * p.H + j] = m;
        ex.put(round, 1, 0, bb, u, from_f<T>(m));
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {  // the projection on the P-units: h_t, y_t
      if (!r.pp.ok[i]) continue;
      const int bb = r.pp.bb[i], u = r.pp.u[i];
      if (t < r.pp.len[i]) r.h[i] = timed_out ? nan_f() : part_sum(part, L.st[1], L.BG, bb, u);  // else h kept
      if (more) ex.put(round, 0, 0, bb, u, from_f<T>(r.h[i]));
    }
  }
  // After stage k's publish (passes.cuh): stage 0 the input loads of step s + kDepth (into the
  // buffer this step consumed), stage 1 y (h, zero past the sequence's end). Stage 0's m and
  // saved stores still precede its publish.
  template <int Par>
  __device__ static void outputs(int k, Regs& r, const Params& p, const Layout&, const Cta& c, int s) {
    const int t = time_of(p, s);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      if (k == 0 && r.ph.ok[i] && s + kDepth < p.steps) prefetch(r.gx[Par % kDepth], r, p, c, i, s + kDepth);
      if (k == 1 && r.pp.ok[i])
        p.y[((size_t)t * p.B + c.b0 + r.pp.bb[i]) * p.ldy + c.jp0 + r.pp.u[i]] =
            from_f<T>(t < r.pp.len[i] ? r.h[i] : 0.0f);
    }
  }
  __device__ static void finish(const Regs& r, const Params& p, const Cta& c) {
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      if (r.pp.ok[i]) p.hT[r.pp.at(i, c, p.P, c.jp0)] = from_f<T>(r.h[i]);
      if (r.ph.ok[i]) p.cT[r.ph.at(i, c, p.H, c.j0)] = from_f<T>(r.c[i]);
    }
  }
};

template <typename T>
struct BwdProjPass : TwoStageBwd<LstmCell, T> {
  using Base = TwoStageBwd<LstmCell, T>;
  using typename Base::Cell, typename Base::Params;
  using Base::G, Base::S, Base::kDepth, Base::time_of;
  struct Regs {
    PairSlots ph, pp;
    float dc[kPairsPerThread];                  // H-pairs: the cell's state gradient,
    float sv[kDepth][kPairsPerThread][S];       // its saved values of the next kDepth phases
    float dh[kPairsPerThread];                  // P-pairs: the carried gradient of h,
    T dy[kDepth][kPairsPerThread];              // and dy of the next kDepth phases as loaded (passes.cuh)
  };

  // stage 0: row up <- W_hhᵀ row jp0 + up (G segments of H); stage 1: row u <- W_hrᵀ row j0 + u (P wide)
  __device__ static int segments(int k) { return k == 0 ? G : 1; }
  __device__ static int seg_len(const Params& p, int k) { return k == 0 ? p.H : p.P; }
  __device__ static const T* weights(const Params& p, int k) { return k == 0 ? p.wt : p.wrt; }
  __device__ static const T* weight_segment(const Params& p, const Layout&, const Cta& c, int k, int lr, int g) {
    if (k == 1) return lr < c.nu ? p.wrt + (size_t)(c.j0 + lr) * p.P : nullptr;
    return lr < c.np ? p.wt + (size_t)(c.jp0 + lr) * (G * p.H) + (size_t)g * p.H : nullptr;
  }
  // phase s's dy (P-pair i) into buffer b, its saved values (H-pair i) into buffer b
  __device__ static void prefetch_dy(Regs& r, int b, const Params& p, const Cta& c, int i, int s) {
    const int t = time_of(p, s);
    if (t < r.pp.len[i])
      r.dy[b][i] = __ldg(p.dy + ((size_t)t * p.B + c.b0 + r.pp.bb[i]) * p.ldy + c.jp0 + r.pp.u[i]);
  }
  __device__ static void prefetch_saved(Regs& r, int b, const Params& p, const Cta& c, int i, int s) {
    const int t = time_of(p, s);
    if (t < r.ph.len[i]) {
      const size_t tb = (size_t)t * p.B + c.b0 + r.ph.bb[i], j = c.j0 + r.ph.u[i];
#pragma unroll
      for (int q = 0; q < S; ++q) r.sv[b][i][q] = __ldg(p.saved + (tb * S + q) * p.H + j);
    }
  }
  template <class X>
  __device__ static void init(Regs& r, const Params& p, const Layout& L, const Cta& c, const X&) {
    r.ph.init(L.U, c.nu, L.st[1].ppt, c, p.lengths, p.steps);
    r.pp.init(L.UP, c.np, L.st[0].ppt, c, p.lengths, p.steps);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      r.dc[i] = r.dh[i] = 0.0f;
#pragma unroll
      for (int b = 0; b < kDepth; ++b) r.dy[b][i] = from_f<T>(0.0f);
      if (r.ph.ok[i]) r.dc[i] = to_f(p.dcT[r.ph.at(i, c, p.H, c.j0)]);
      if (r.pp.ok[i]) r.dh[i] = to_f(p.dhT[r.pp.at(i, c, p.P, c.jp0)]);
#pragma unroll
      for (int b = 0; b < kDepth; ++b) {  // phases 0 .. kDepth-1
        if (b >= p.steps) continue;
        if (r.ph.ok[i]) prefetch_saved(r, b, p, c, i, b);
        if (r.pp.ok[i]) prefetch_dy(r, b, p, c, i, b);
      }
    }
  }
  template <int Par, class X>
  __device__ static void pointwise(int k, Regs& r, const Params& p, const Layout& L, const Cta& c, const X& ex,
                                   const float* part, const float*, int s, bool consumed, int round) {
    const bool timed_out = *ex.abort != 0;  // results after a timeout: NaN
    if (k == 0) {  // the gradient reaching h_t on the P-units
#pragma unroll
      for (int i = 0; i < kPairsPerThread; ++i) {
        if (!r.pp.ok[i]) continue;
        const int bb = r.pp.bb[i], u = r.pp.u[i], jp = c.jp0 + u;
        float dh = r.dh[i] + (consumed ? part_sum(part, L.st[0], L.BG, bb, u) : 0.0f);
        if (timed_out) dh = nan_f();
        if (s == p.steps) {  // the last phase: what reaches h0
          p.dh0[r.pp.at(i, c, p.P, c.jp0)] = from_f<T>(dh);
          continue;
        }
        const int t = time_of(p, s);
        const size_t tb = (size_t)t * p.B + c.b0 + bb;
        float sent = 0.0f;  // past the sequence's end: the gradient passes through to h_{t-1}, m gets none
        if (t < r.pp.len[i]) {
          sent = dh + to_f(r.dy[Par % kDepth][i]);
          r.dh[i] = 0.0f;
        } else {
          r.dh[i] = dh;
        }
        p.dh[tb * p.P + jp] = sent;
        ex.put(round, 1, 0, bb, u, from_f<T>(sent));
      }
      return;
    }
    const int t = time_of(p, s);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {  // the cell backward on the H-units
      if (!r.ph.ok[i]) continue;
      const int bb = r.ph.bb[i], u = r.ph.u[i], j = c.j0 + u;
      T* pgx = p.d_gx + ((size_t)t * p.B + c.b0 + bb) * p.ldg + j;
      if (t < r.ph.len[i]) {
        const float dm = timed_out ? nan_f() : part_sum(part, L.st[1], L.BG, bb, u);
        float dgx[G], dgh[G], dl, dcp;
        Cell::backward(r.sv[Par % kDepth][i], dm, r.dc[i], dgx, dgh, &dl, &dcp);
#pragma unroll
        for (int g = 0; g < G; ++g) {
          pgx[(size_t)g * p.H] = from_f<T>(dgx[g]);
          ex.put(round, 0, g, bb, u, from_f<T>(dgh[g]));
        }
        r.dc[i] = dcp;
      } else {  // the state passed through unchanged: so does dc
        const T zero = from_f<T>(0.0f);
#pragma unroll
        for (int g = 0; g < G; ++g) {
          pgx[(size_t)g * p.H] = zero;
          ex.put(round, 0, g, bb, u, zero);
        }
      }
    }
  }
  // After stage k's publish (passes.cuh): phase s + kDepth's dy (stage 0) and saved (stage 1)
  // loads, into the buffers this phase consumed. The dh and d_gx stores still precede the publish.
  template <int Par>
  __device__ static void outputs(int k, Regs& r, const Params& p, const Layout&, const Cta& c, int s) {
    if (s + kDepth >= p.steps) return;
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      if (k == 0 && r.pp.ok[i]) prefetch_dy(r, Par % kDepth, p, c, i, s + kDepth);
      if (k == 1 && r.ph.ok[i]) prefetch_saved(r, Par % kDepth, p, c, i, s + kDepth);
    }
  }
  __device__ static void finish(const Regs& r, const Params& p, const Cta& c) {
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i)
      if (r.ph.ok[i]) p.dc0[r.ph.at(i, c, p.H, c.j0)] = from_f<T>(r.dc[i]);
  }
};

}  // namespace fusedrnn
