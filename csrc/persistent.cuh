// The persistent recurrence kernel: one launch for the whole sequence, every tier
// (layout.h, exchange.cuh), both passes (passes.cuh, passes_proj.cuh), both directions.
//
// Grid: D directions x NBG batch groups x NU CTAs (unit slices); CTA (d, bg, rank) runs
// direction d for batch rows [bg*BG, bg*BG + BG) and owns units [rank*U, rank*U + U)
// (P-units [rank*UP, ...) with a projection); it keeps the weights of its units in shared
// memory for the whole launch. Per step s and stage k:
//   consume the latest round (tier 1: nothing; 2: cluster barrier; 3: flags + cp.async,
//   streamed in passes) -> tensor-core matmul into part -> __syncthreads
//   -> pointwise: cell step (or projection) in registers, puts of the next round -> publish
//   the round -> outputs (global stores) and the input loads of step s + Pass::kDepth, which
//   the publish's release thus does not wait for. With kDepth 2 a step's inputs were loaded
//   two steps before it, so no step waits for a load issued after the previous step's wait.
// Shared memory: A_k (RP, lda) weights | X_k (nx, BG, ldx) | bias (RP_0) fp32 | stage | part.
#pragma once
#include "passes.cuh"

namespace fusedrnn {

// Stage k's weight slice into smem, once. When every segment is a 16-byte multiple and the
// weights 16-byte aligned, zero the slice, then copy each segment with 16-byte cp.async
// (all in flight at once); otherwise (odd sizes, a weight view off alignment) element by element.
template <class Pass>
__device__ __forceinline__ void load_weights(typename Pass::Elem* A, const typename Pass::Params& p,
                                             const Layout& L, const Cta& c, int k) {
  using T = typename Pass::Elem;
  constexpr int kVec = 16 / sizeof(T);
  const Stage& S = L.st[k];
  const int len = Pass::seg_len(p, k), nseg = Pass::segments(k), stride = S.cw * L.NU;
  if ((len * (int)sizeof(T)) % 16 != 0 || reinterpret_cast<uintptr_t>(Pass::weights(p, k)) % 16 != 0) {
    const int n = S.RP * S.Kp;
    for (int i = threadIdx.x; i < n; i += kThreads) {
      const int lr = i / S.Kp, col = i % S.Kp, g = col / stride, q = col % stride;
      const T* src = g < nseg ? Pass::weight_segment(p, L, c, k, lr, g) : nullptr;
      A[(size_t)lr * S.lda + col] = (src != nullptr && q < len) ? src[q] : from_f<T>(0.0f);
    }
    return;
  }
  uint4* z = reinterpret_cast<uint4*>(A);
  for (int i = threadIdx.x; i < S.RP * S.lda / kVec; i += kThreads) z[i] = make_uint4(0, 0, 0, 0);
  __syncthreads();
  const int pr = len / kVec, per_row = nseg * pr;
  for (int i = threadIdx.x; i < S.RP * per_row; i += kThreads) {
    const int lr = i / per_row, g = (i % per_row) / pr, q = i % pr;
    const T* src = Pass::weight_segment(p, L, c, k, lr, g);
    if (src != nullptr) cp_async16(A + (size_t)lr * S.lda + g * stride + q * kVec, src + q * kVec);
  }
  cp_async_wait_all();
}

// What one step of persistent_kernel reads and updates (the registers r and the round count
// by reference).
template <class Pass>
struct StepState {
  const typename Pass::Params& p;
  const Layout& L;
  const Cta& c;
  const Exchange<typename Pass::Elem>& ex;
  unsigned char* smem;
  float* part;
  const float* bias;
  typename Pass::Regs& r;
  int& round;
};

// Step s: every stage's matmul over the latest round, pointwise, publish and outputs. Par:
// the step's parity, whose input registers it consumes and refills (Pass::kDepth); a
// template argument, so that each parity names its own registers.
template <class Pass, int Par>
__device__ __forceinline__ void run_step(const StepState<Pass>& st, int s) {
  using T = typename Pass::Elem;
  constexpr int KE = 32 / sizeof(T);
  const Layout& L = st.L;
  const auto& ex = st.ex;
#pragma unroll
  for (int k = 0; k < Pass::kStages; ++k) {
    if (!Pass::runs(st.p, s, k)) break;
    const bool consumed = Pass::consumes(s, k);
    if (consumed) {
      const T* A = reinterpret_cast<const T*>(st.smem + L.st[k].off_a);
      if (L.tier == 3) {
        ex.stream_multiply(k, st.round - 1, s, A, st.part);
      } else {
        ex.consume();
        step_matmul<T>(A, ex.operand(k, st.round - 1), 0, st.part, L.st[k], ex.div.mm[k], L.BG, 0, L.st[k].Kp / KE,
                       false);
      }
      __syncthreads();
    }
    Pass::template pointwise<Par>(k, st.r, st.p, L, st.c, ex, st.part, st.bias, s, consumed, st.round);
    if (Pass::publishes(st.p, s, k)) ex.publish(st.round++, (k + 1) % Pass::kStages);
    Pass::template outputs<Par>(k, st.r, st.p, L, st.c, s);  // after the publish: its release does not wait for them
  }
}

template <class Pass>
__global__ void __launch_bounds__(kThreads, 1)
persistent_kernel(const typename Pass::Params pa, const Layout L, const Workspace ws) {
  using T = typename Pass::Elem;
  FUSEDRNN_DYNAMIC_SMEM(smem);
  FUSEDRNN_SHARED(int, s_abort, );
  const Cta c = Cta::of(L, pa.B, pa.H, pa.P);
  const typename Pass::Params p = Pass::direction(pa, c.dir);
  float* part = reinterpret_cast<float*>(smem + L.off_part);
  float* bias = reinterpret_cast<float*>(smem + L.off_bias);
  if (threadIdx.x == 0) s_abort = 0;
  uint4* zero = reinterpret_cast<uint4*>(smem + L.st[0].off_x);  // X, bias and stage: zero padding
  for (int i = threadIdx.x; i < (L.off_part - L.st[0].off_x) / 16; i += kThreads) zero[i] = make_uint4(0, 0, 0, 0);
  __syncthreads();
#pragma unroll
  for (int k = 0; k < Pass::kStages; ++k) load_weights<Pass>(reinterpret_cast<T*>(smem + L.st[k].off_a), p, L, c, k);
  Pass::load_bias(bias, p, L, c);
  const Exchange<T> ex{L, c, smem, ws, &s_abort, Pass::kBackward ? 1 : 0, Exchange<T>::divisors(L, c)};
  __syncthreads();
  ex.begin();
  typename Pass::Regs r;
  Pass::init(r, p, L, c, ex);
  int round = 0;  // exchange rounds published so far
  if (Pass::kPublishesInitial) ex.publish(round++, 0);
  const int n = Pass::steps(p);
  const StepState<Pass> st{p, L, c, ex, smem, part, bias, r, round};
  if constexpr (Pass::kDepth == 2) {
    // two steps per iteration, so that each consumes its own parity's registers: a buffer
    // picked by a runtime parity, or rotated by a move, would wait for a load still in flight
    for (int s = 0; s < n; s += 2) {
      run_step<Pass, 0>(st, s);
      if (s + 1 < n) run_step<Pass, 1>(st, s + 1);
    }
  } else {
    for (int s = 0; s < n; ++s) run_step<Pass, 0>(st, s);
  }
  Pass::finish(r, p, c);
  ex.end();
}

}  // namespace fusedrnn
