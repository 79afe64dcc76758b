// What the passes with two stages per step share (the LSTM projection's, passes_proj.cuh; the
// reset-before GRU's, passes_reset.cuh): the step schedule the persistent loop asks about, and
// the forward's input loads. Each pass adds its registers, weights, bias and pointwise parts.
#pragma once
#include "passes.cuh"

namespace fusedrnn {

template <class C, typename T>
struct TwoStageFwd {
  using Cell = C;
  using Elem = T;
  using Params = FwdParams<T>;
  static constexpr bool kBackward = false, kPublishesInitial = true, kMasked = false;  // no masks (validate.cpp)
  static constexpr int kStages = 2, G = Cell::G, S = Cell::S;
  static constexpr int kDepth = kInputDepthProj;  // steps between an input's load and its use (passes.cuh)

  __device__ static Params direction(const Params& p, int d) { return p.direction(d, G, S); }
  __device__ static int steps(const Params& p) { return p.steps; }
  __device__ static bool runs(const Params&, int, int) { return true; }
  __device__ static bool consumes(int, int) { return true; }
  __device__ static bool publishes(const Params& p, int s, int k) { return k == 0 || s + 1 < p.steps; }
  __device__ static int time_of(const Params& p, int s) { return p.reverse ? p.steps - 1 - s : s; }

  // step s's gx of pair i (of the slots on the cell's H-units) into buffer buf
  __device__ static void prefetch(T (&buf)[kPairsPerThread][G], const PairSlots& ps, const Params& p, const Cta& c,
                                  int i, int s) {
    const int t = time_of(p, s);
    if (t < ps.len[i]) {
      const T* src = p.gx + ((size_t)t * p.B + c.b0 + ps.bb[i]) * p.ldg + c.j0 + ps.u[i];
#pragma unroll
      for (int g = 0; g < G; ++g) buf[i][g] = __ldg(src + (size_t)g * p.H);
    }
  }
};

// Phase s in [0, T]: stage 0 runs every phase (phase T only hands dh0 on), stage 1 the first T.
template <class C, typename T>
struct TwoStageBwd {
  using Cell = C;
  using Elem = T;
  using Params = BwdParams<T>;
  static constexpr bool kBackward = true, kPublishesInitial = false, kMasked = false;  // no masks (validate.cpp)
  static constexpr int kStages = 2, G = Cell::G, S = Cell::S;
  static constexpr int kDepth = kInputDepthProj;

  __device__ static Params direction(const Params& p, int d) { return p.direction(d, G, S); }
  __device__ static int steps(const Params& p) { return p.steps + 1; }
  __device__ static bool runs(const Params& p, int s, int k) { return k == 0 || s < p.steps; }
  __device__ static bool consumes(int s, int k) { return k == 1 || s >= 1; }
  __device__ static bool publishes(const Params& p, int s, int) { return s < p.steps; }
  __device__ static int time_of(const Params& p, int s) { return p.reverse ? s : p.steps - 1 - s; }
  __device__ static void load_bias(float*, const Params&, const Layout&, const Cta&) {}
};

}  // namespace fusedrnn
