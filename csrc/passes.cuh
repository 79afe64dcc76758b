// The forward and the backward recurrence as the persistent loop (persistent.cuh) sees
// them: the weight slice each CTA keeps, the state each pointwise thread carries in
// registers across steps, the loads issued one step ahead (before the step's wait), and
// the cell step itself (csrc/cells, shared with the host build). One stage per step here;
// the LSTM with a projection has two (passes_proj.cuh).
//
// Dimensions as in params.cuh (P == H here). Step s runs time t = s forward (reverse:
// T-1-s). The backward has T+1 phases: phase s < T runs forward step t = T-1-s (reverse:
// t = s); phase T only finishes dh0/dc0. Steps t >= lengths[b] leave the state unchanged,
// emit zeros and read no input.
//
// A pass tells the loop, per step s and stage k: runs(s, k), consumes(s, k) (a matmul over
// the latest exchange round first), publishes(s, k) (its puts form the next round, which
// stage (k + 1) % kStages consumes); weights per stage (segments of seg_len elements, the
// smem column of segment g at g*cw*NU); pointwise(k, ...), which puts round `round`.
#pragma once
#include <type_traits>

#include "exchange.cuh"
#include "params.cuh"
#include "step_matmul.cuh"

namespace fusedrnn {

// The pointwise pairs of one thread: pair i = threadIdx.x + i*kThreads -> (row bb, unit u)
// of `width` units per CTA, `count` of them real, `ppt` pairs per thread in use.
struct PairSlots {
  int bb[kPairsPerThread], u[kPairsPerThread], len[kPairsPerThread];
  bool ok[kPairsPerThread];
  __device__ void init(int width, int count, int ppt, const Cta& c, const int32_t* lengths, int T) {
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      const int p = threadIdx.x + i * kThreads;
      bb[i] = p / width;
      u[i] = p % width;
      ok[i] = i < ppt && bb[i] < c.nb && u[i] < count;
      len[i] = (ok[i] && lengths) ? lengths[c.b0 + bb[i]] : T;
    }
  }
  // offset of pair i in a (B, N) tensor whose units j0 + u this CTA owns
  __device__ size_t at(int i, const Cta& c, int N, int j0) const { return (size_t)(c.b0 + bb[i]) * N + j0 + u[i]; }
};

// Two values x, y of dtype T, converted from float: Packed, in one register where T is 16-bit
// (alone, a 16-bit value takes a whole 32-bit register), or Apart.
template <typename T>
struct Apart {
  T x, y;
  __device__ static Apart of(float a, float b) { return {from_f<T>(a), from_f<T>(b)}; }
};
struct PackedBf16 : __nv_bfloat162 {
  __device__ static PackedBf16 of(float a, float b) { return {__floats2bfloat162_rn(a, b)}; }
};
struct PackedHalf : __half2 {
  __device__ static PackedHalf of(float a, float b) { return {__floats2half2_rn(a, b)}; }
};
template <typename T>
using Packed = std::conditional_t<std::is_same<T, __nv_bfloat16>::value, PackedBf16,
                                  std::conditional_t<std::is_same<T, __half>::value, PackedHalf, Apart<T>>>;

__device__ __forceinline__ float nan_f() { return __int_as_float(0x7fc00000); }

// How many steps ahead a pass loads its inputs (Pass::kDepth, persistent.cuh): 2 where the
// second buffer fits in the registers (__launch_bounds__(kThreads, 1): 255 a thread) without
// a spill (ptxas -v, the compile gate), else 1. Without a projection every cell and dtype
// fits (the GRU backward in 16-bit once its outputs are packed: BwdPass::Regs::Out); the
// LSTM projection passes (passes_proj.cuh: two stages a step, twice in the loop body) spill
// 20-216 bytes in every dtype with two, so they keep one, as do the reset-before GRU's two-stage
// passes (passes_reset.cuh).
constexpr int kInputDepth = 2, kInputDepthProj = 1;

// Whether pair slot i is in use in any thread (i < the plan's ppt): a test of the kernel
// parameter, uniform across the CTA, so the slots past ppt are skipped by whole warps and
// the compile gate's walk, told the plan's layout, reads only the slots a launch runs
// (PairSlots::ok, a per-thread value, also tests i < ppt but is opaque to the walk).
__device__ __forceinline__ bool slot_used(int i, const Stage& S) { return i < S.ppt; }

// Z: the regularised pass (FwdRegPass, BwdRegPass below): zoneout and recurrent dropout with
// the masks of params.cuh (FwdParams::zh, zc, dm; each may be null). The plain pass (Z false)
// compiles to the same code as before the masks existed.
template <class C, typename T, bool Z>
struct FwdPassImpl {
  using Cell = C;
  using Elem = T;
  using Params = FwdParams<T>;
  static constexpr bool kBackward = false, kPublishesInitial = true, kMasked = Z;
  static constexpr int kStages = 1, G = Cell::G, S = Cell::S;
  static constexpr int kDepth = kInputDepth;  // steps between an input's load and its use
  static constexpr int kZ = Z ? kPairsPerThread : 1;  // the masks' register slots (1, unused, when plain)
  struct Regs {
    PairSlots p;
    float h[kPairsPerThread], c[kPairsPerThread];
    T gx[kDepth][kPairsPerThread][G];  // the inputs of the next kDepth steps, as loaded: converted where used
    float sv[kPairsPerThread][S];  // this step's saved activations, stored after the publish
    // Z: the zoneout masks of the next kDepth steps (loaded with gx) and the dropout mask of the
    // sequence (one per pair for the whole launch)
    float zh[kDepth][kZ], zc[kDepth][kZ], dm[kZ];
  };

  __device__ static Params direction(const Params& p, int d) { return p.direction(d, G, S); }
  __device__ static int steps(const Params& p) { return p.steps; }
  __device__ static bool runs(const Params&, int, int) { return true; }
  __device__ static bool consumes(int, int) { return true; }
  __device__ static bool publishes(const Params& p, int s, int) { return s + 1 < p.steps; }
  __device__ static int time_of(const Params& p, int s) { return p.reverse ? p.steps - 1 - s : s; }

  // slice row lr = g*U + u  <-  W_hh row g*H + j0 + u; column k  <-  h_k (k < H)
  __device__ static int segments(int) { return 1; }
  __device__ static int seg_len(const Params& p, int) { return p.P; }
  __device__ static const T* weights(const Params& p, int) { return p.w; }
  __device__ static const T* weight_segment(const Params& p, const Layout& L, const Cta& c, int, int lr, int) {
    const int g = lr / L.U, u = lr % L.U;
    return (g < G && u < c.nu) ? p.w + (size_t)(g * p.H + c.j0 + u) * p.P : nullptr;
  }
  __device__ static void load_bias(float* bias, const Params& p, const Layout& L, const Cta& c) {
    for (int lr = threadIdx.x; lr < L.st[0].RP; lr += kThreads) {
      const int g = lr / L.U, u = lr % L.U;
      bias[lr] = (p.bias != nullptr && g < G && u < c.nu) ? to_f(p.bias[g * p.H + c.j0 + u]) : 0.0f;
    }
  }
  // pair i's gx of time t into buffer b; gxt = gx_at(p, t), the step's slice (computed once per step)
  __device__ static void prefetch(T (&buf)[kPairsPerThread][G], const Regs& r, const Params& p, const Cta& c, int i,
                                  int t, const T* gxt) {
    if (t < r.p.len[i]) {
      const T* src = gxt + (c.b0 + r.p.bb[i]) * p.ldg + c.j0 + r.p.u[i];
#pragma unroll
      for (int g = 0; g < G; ++g) buf[i][g] = __ldg(src + g * p.H);
    }
  }
  // Z: pair i's zoneout masks of time t into slot b (0 where a mask is absent: no zoneout)
  __device__ static void prefetch_masks(Regs& r, const Params& p, const Cta& c, int i, int t, int b) {
    if constexpr (Z) {
      r.zh[b][i] = r.zc[b][i] = 0.0f;
      if (t < r.p.len[i]) {
        const int row = c.b0 + r.p.bb[i], j = c.j0 + r.p.u[i];
        if (p.zh != nullptr) r.zh[b][i] = __ldg(p.zh + ((size_t)t * p.B + row) * p.ldy + j);
        if (Cell::HAS_C && p.zc != nullptr) r.zc[b][i] = __ldg(p.zc + ((size_t)t * p.B + row) * p.ldy + j);
      }
    }
  }
  // Time t's slice of gx: the 64-bit part of its addresses, once per step; an offset inside
  // one step's slice is an int (validate.cpp keeps B*D*G*H, so B*ldg, in the int32 range).
  __device__ static const T* gx_at(const Params& p, int t) { return p.gx + (size_t)t * p.B * p.ldg; }
  template <class X>
  __device__ static void init(Regs& r, const Params& p, const Layout& L, const Cta& c, const X& ex) {
    r.p.init(L.U, c.nu, L.st[0].ppt, c, p.lengths, p.steps);
    const auto out = ex.target(0, 0);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      r.h[i] = r.c[i] = 0.0f;
      if (!r.p.ok[i]) continue;
      const size_t bj = r.p.at(i, c, p.H, c.j0);
      const T h0 = p.h0[bj];
      r.h[i] = to_f(h0);
      if (Cell::HAS_C) r.c[i] = to_f(p.c0[bj]);
      if constexpr (Z) {  // the product takes dm ⊙ h_{t-1}; the state itself stays unmasked
        r.dm[i] = p.dm != nullptr ? p.dm[bj] : 1.0f;
        out.put(0, r.p.bb[i], r.p.u[i], from_f<T>(r.dm[i] * r.h[i]));
      } else {
        out.put(0, r.p.bb[i], r.p.u[i], h0);
      }
#pragma unroll
      for (int b = 0; b < kDepth; ++b) {  // steps 0 .. kDepth-1 (a shorter sequence: step 0 again, unused)
        const int t = time_of(p, b < p.steps ? b : 0);
        prefetch(r.gx[b], r, p, c, i, t, gx_at(p, t));
        prefetch_masks(r, p, c, i, t, b);
      }
    }
  }
  // The step's cell and the next round's puts: all that the publish after it guards. The
  // outputs wait in registers for outputs(), after the publish, so that the release (and a
  // cluster barrier's arrive) does not wait for their global stores.
  // Par: the step's parity (persistent.cuh), whose input buffer it consumes
  template <int Par, class X>
  __device__ static void pointwise(int, Regs& r, const Params& p, const Layout& L, const Cta& c, const X& ex,
                                   const float* part, const float* bias, int s, bool, int round) {
    const int t = time_of(p, s);
    const auto& in = r.gx[Par % kDepth];
    const bool timed_out = *ex.abort != 0;  // results after a timeout: NaN
    const auto out = ex.target(round, 0);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      if (!slot_used(i, L.st[0])) break;
      if (!r.p.ok[i]) continue;
      const int bb = r.p.bb[i], u = r.p.u[i];
      if (t < r.p.len[i]) {  // past the sequence's end: state kept
        float gx[G], gh[G], hn, cn;
#pragma unroll
        for (int g = 0; g < G; ++g) {
          gx[g] = to_f(in[i][g]);
          gh[g] = bias[g * L.U + u] + part_sum(part, L.st[0], L.BG, bb, g * L.U + u);
        }
        Cell::forward(gx, gh, r.h[i], r.c[i], &hn, &cn, r.sv[i]);
        if constexpr (Z) {  // zoneout: h_t = z h_{t-1} + (1 - z) h̃_t (c likewise), from the unmasked state
          const float zh = r.zh[Par % kDepth][i], zc = r.zc[Par % kDepth][i];
          hn = zh * r.h[i] + (1.0f - zh) * hn;
          cn = zc * r.c[i] + (1.0f - zc) * cn;
        }
        r.h[i] = timed_out ? nan_f() : hn;
        if (Cell::HAS_C) r.c[i] = cn;
      }
      // put in the last step too, where no publish follows: nothing reads that round, and its
      // buffer's previous round was consumed before this step's barrier (tiers 1, 3: the round
      // two back; tier 2: the outgoing slice, copied out by the last publish). No branch on
      // `more` here: it would have the compiler keep two copies of this loop.
      if constexpr (Z) {
        out.put(0, bb, u, from_f<T>(r.dm[i] * r.h[i]));
      } else {
        out.put(0, bb, u, from_f<T>(r.h[i]));
      }
    }
  }
  // After the publish: the step's y (h, zero past the sequence's end) and saved activations,
  // then the input loads of step s + kDepth, into the buffer this step consumed.
  // Addresses: the step's slices (y, saved, the next gx) once, then int offsets in them (within
  // one step: B*ldy <= B*ldg and B*S*H, both kept in int32 by validate.cpp).
  template <int Par>
  __device__ static void outputs(int, Regs& r, const Params& p, const Layout& L, const Cta& c, int s) {
    // the input of step s + kDepth; the last steps load their own again (never used), so that
    // no branch on the step splits this loop into two copies
    const int t = time_of(p, s), tn = s + kDepth < p.steps ? time_of(p, s + kDepth) : t;
    T* yt = p.y + (size_t)t * p.B * p.ldy;
    float* svt = p.saved != nullptr ? p.saved + (size_t)t * p.B * S * p.H : nullptr;
    const T* gxn = gx_at(p, tn);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      if (!slot_used(i, L.st[0])) break;
      if (!r.p.ok[i]) continue;
      const int j = c.j0 + r.p.u[i], row = c.b0 + r.p.bb[i];
      const bool live = t < r.p.len[i];
      if (live && svt != nullptr) {
#pragma unroll
        for (int q = 0; q < S; ++q) svt[(row * S + q) * p.H + j] = r.sv[i][q];
      }
      yt[row * p.ldy + j] = from_f<T>(live ? r.h[i] : 0.0f);
      prefetch(r.gx[Par % kDepth], r, p, c, i, tn, gxn);
      prefetch_masks(r, p, c, i, tn, Par % kDepth);
    }
  }
  __device__ static void finish(const Regs& r, const Params& p, const Cta& c) {
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      if (!r.p.ok[i]) continue;
      const size_t bj = r.p.at(i, c, p.H, c.j0);
      p.hT[bj] = from_f<T>(r.h[i]);
      if (Cell::HAS_C) p.cT[bj] = from_f<T>(r.c[i]);
    }
  }
};

// The gradient entering h_{t} is dh = dstate (the cell's local part, e.g. GRU's z·dh, or
// everything past a sequence's end) + d_gh_{t_next} W_hh (the matmul over K = G*Hp).
// Z (regularised): with zoneout z the cell gets (1 - z)·dh (and (1 - z_c)·dc) and z·dh (z_c·dc)
// bypasses it to h_{t-1} (c_{t-1}); the product's gradient W_hhᵀ d_gh reaches h_{t-1} times dm.
template <class C, typename T, bool Z>
struct BwdPassImpl {
  using Cell = C;
  using Elem = T;
  using Params = BwdParams<T>;
  static constexpr bool kBackward = true, kPublishesInitial = false, kMasked = Z;
  static constexpr int kStages = 1, G = Cell::G, S = Cell::S;
  static constexpr int kZ = Z ? kPairsPerThread : 1;  // the masks' register slots (1, unused, when plain)
  // d_gh is a tensor of its own for the GRU only (validate.cpp: required and not aliasing
  // d_gx there, absent for the other cells), so whether to store it is the cell's fact
  static constexpr bool kSplit = Cell::kInfo.id == fusedrnn::Cell::GRU;
  static constexpr int kDepth = kInputDepth;  // steps between an input's load and its use
  struct In {  // a step's inputs: dy as loaded (converted where it is added), the saved activations
    T dy[kPairsPerThread];
    float sv[kPairsPerThread][S];
    float zh[kZ], zc[kZ];  // Z: the step's zoneout masks (0 where absent)
  };
  struct Regs {
    PairSlots p;
    float dh[kPairsPerThread], dc[kPairsPerThread];
    float dm[kZ];  // Z: the dropout mask of the pair's sequence (1 where absent)
    In in[kDepth];  // the inputs of the next kDepth steps
    // this step's outputs (x: d_gx, y: d_gh), stored after the publish; packed where d_gh is a
    // tensor of its own, which frees the registers for the GRU's second input buffer in 16-bit
    using Out = std::conditional_t<kSplit, Packed<T>, Apart<T>>;
    Out dg[kPairsPerThread][G];
  };

  __device__ static Params direction(const Params& p, int d) { return p.direction(d, G, S); }
  __device__ static int steps(const Params& p) { return p.steps + 1; }
  __device__ static bool runs(const Params&, int, int) { return true; }
  __device__ static bool consumes(int s, int) { return s >= 1; }
  __device__ static bool publishes(const Params& p, int s, int) { return s + 1 < p.steps + 1; }
  __device__ static int time_of(const Params& p, int s) { return p.reverse ? s : p.steps - 1 - s; }

  // slice row u  <-  W_hhᵀ row j0 + u; column g*Hp + k  <-  d_gh column g*H + k (k < H)
  __device__ static int segments(int) { return G; }
  __device__ static int seg_len(const Params& p, int) { return p.H; }
  __device__ static const T* weights(const Params& p, int) { return p.wt; }
  __device__ static const T* weight_segment(const Params& p, const Layout&, const Cta& c, int, int lr, int g) {
    return lr < c.nu ? p.wt + (size_t)(c.j0 + lr) * (G * p.H) + (size_t)g * p.H : nullptr;
  }
  __device__ static void load_bias(float*, const Params&, const Layout&, const Cta&) {}
  // pair i's dy and saved activations of time t into `in`, from the step's slices dyt, svt
  // (computed once per step); int offsets inside them (within one step: B*ldy and B*S*H,
  // int32 by validate.cpp)
  __device__ static void prefetch(In& in, const Regs& r, const Params& p, const Cta& c, int i, int t, const T* dyt,
                                  const float* svt) {
    if (t < r.p.len[i]) {
      const int row = c.b0 + r.p.bb[i], j = c.j0 + r.p.u[i];
      in.dy[i] = __ldg(dyt + row * p.ldy + j);
#pragma unroll
      for (int q = 0; q < S; ++q) in.sv[i][q] = __ldg(svt + (row * S + q) * p.H + j);
      if constexpr (Z) {
        const size_t at = ((size_t)t * p.B + row) * p.ldy + j;
        in.zh[i] = p.zh != nullptr ? __ldg(p.zh + at) : 0.0f;
        in.zc[i] = Cell::HAS_C && p.zc != nullptr ? __ldg(p.zc + at) : 0.0f;
      }
    }
  }
  __device__ static const T* dy_at(const Params& p, int t) { return p.dy + (size_t)t * p.B * p.ldy; }
  __device__ static const float* saved_at(const Params& p, int t) { return p.saved + (size_t)t * p.B * S * p.H; }
  template <class X>
  __device__ static void init(Regs& r, const Params& p, const Layout& L, const Cta& c, const X&) {
    r.p.init(L.U, c.nu, L.st[0].ppt, c, p.lengths, p.steps);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      r.dh[i] = r.dc[i] = 0.0f;
      if (!r.p.ok[i]) continue;
      const size_t bj = r.p.at(i, c, p.H, c.j0);
      r.dh[i] = to_f(p.dhT[bj]);
      if (Cell::HAS_C) r.dc[i] = to_f(p.dcT[bj]);
      if constexpr (Z) r.dm[i] = p.dm != nullptr ? p.dm[bj] : 1.0f;
#pragma unroll
      for (int b = 0; b < kDepth; ++b) {  // phases 0 .. kDepth-1 (a shorter sequence: phase 0 again, unused)
        const int t = time_of(p, b < p.steps ? b : 0);
        prefetch(r.in[b], r, p, c, i, t, dy_at(p, t), saved_at(p, t));
      }
    }
  }
  // The step's cell backward and the next round's puts (d_gh); d_gx and d_gh wait in
  // registers for outputs(), after the publish, so that the release does not wait for them.
  // Par: the phase's parity (persistent.cuh), whose input buffer it consumes.
  template <int Par, class X>
  __device__ static void pointwise(int, Regs& r, const Params& p, const Layout& L, const Cta& c, const X& ex,
                                   const float* part, const float*, int s, bool consumed, int round) {
    In& in = r.in[Par % kDepth];
    const bool timed_out = *ex.abort != 0;  // results after a timeout: NaN
    const auto out = ex.target(round, 0);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      if (!slot_used(i, L.st[0])) break;
      if (!r.p.ok[i]) continue;
      const int bb = r.p.bb[i], u = r.p.u[i];
      // read unconditionally, then selected: a branch on `consumed` (the first phase only)
      // would have the compiler keep two copies of this loop
      float ps = part_sum(part, L.st[0], L.BG, bb, u);
      if constexpr (Z) ps *= r.dm[i];  // the product took dm ⊙ h
      float dh = r.dh[i] + (consumed ? ps : 0.0f);
      if (timed_out) dh = nan_f();
      if (s == p.steps) {  // the last phase: what reaches h0 (and c0: r.dc), stored by finish()
        r.dh[i] = dh;
        continue;
      }
      if (time_of(p, s) < r.p.len[i]) {
        dh += to_f(in.dy[i]);
        float dgx[G], dgh[G], dl, dcp;
        if constexpr (Z) {  // zoneout: the cell's part of the state, and the part that bypasses it
          const float zh = in.zh[i], zc = in.zc[i];
          Cell::backward(in.sv[i], (1.0f - zh) * dh, (1.0f - zc) * r.dc[i], dgx, dgh, &dl, &dcp);
          dl += zh * dh;
          dcp += zc * r.dc[i];
        } else {
          Cell::backward(in.sv[i], dh, r.dc[i], dgx, dgh, &dl, &dcp);
        }
#pragma unroll
        for (int g = 0; g < G; ++g) {
          r.dg[i][g] = Regs::Out::of(dgx[g], dgh[g]);
        }
        r.dh[i] = dl;
        if (Cell::HAS_C) r.dc[i] = dcp;
      } else {  // the state passed through unchanged: so does its gradient; dy is ignored
#pragma unroll
        for (int g = 0; g < G; ++g) r.dg[i][g] = Regs::Out::of(0.0f, 0.0f);
        r.dh[i] = dh;
      }
#pragma unroll
      for (int g = 0; g < G; ++g) out.put(g, bb, u, r.dg[i][g].y);
    }
  }
  // After the publish: the step's d_gx (and d_gh where it is a tensor of its own), then the
  // dy and saved loads of phase s + kDepth, into the buffer this phase consumed.
  template <int Par>
  __device__ static void outputs(int, Regs& r, const Params& p, const Layout& L, const Cta& c, int s) {
    if (s == p.steps) return;
    const size_t slice = (size_t)time_of(p, s) * p.B * p.ldg;  // the step's; int offsets inside (B*ldg)
    T* dgxt = p.d_gx + slice;
    T* dght = p.d_gh + slice;
    // phase s + kDepth's loads; the last phases load their own again (never used), so that no
    // branch on the step splits this loop into two copies
    const int tn = time_of(p, s + kDepth < p.steps ? s + kDepth : s);
    const T* dyn = dy_at(p, tn);
    const float* svn = saved_at(p, tn);
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      if (!slot_used(i, L.st[0])) break;
      if (!r.p.ok[i]) continue;
      const int at = (c.b0 + r.p.bb[i]) * p.ldg + c.j0 + r.p.u[i];
#pragma unroll
      for (int g = 0; g < G; ++g) {
        dgxt[at + g * p.H] = r.dg[i][g].x;
        if (kSplit) dght[at + g * p.H] = r.dg[i][g].y;
      }
      prefetch(r.in[Par % kDepth], r, p, c, i, tn, dyn, svn);
    }
  }
  // After the last phase: the gradients reaching h0 and c0.
  __device__ static void finish(const Regs& r, const Params& p, const Cta& c) {
#pragma unroll
    for (int i = 0; i < kPairsPerThread; ++i) {
      if (!r.p.ok[i]) continue;
      const size_t bj = r.p.at(i, c, p.H, c.j0);
      p.dh0[bj] = from_f<T>(r.dh[i]);
      if (Cell::HAS_C) p.dc0[bj] = from_f<T>(r.dc[i]);
    }
  }
};

// The passes the kernels are instantiated with: plain, and regularised (zoneout, recurrent
// dropout), each a type of its own so that the plain kernels keep their names.
template <class C, typename T>
struct FwdPass : FwdPassImpl<C, T, false> {};
template <class C, typename T>
struct BwdPass : BwdPassImpl<C, T, false> {};
template <class C, typename T>
struct FwdRegPass : FwdPassImpl<C, T, true> {};
template <class C, typename T>
struct BwdRegPass : BwdPassImpl<C, T, true> {};

}  // namespace fusedrnn
