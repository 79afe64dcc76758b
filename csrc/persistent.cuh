// The persistent recurrence kernel: one launch for the whole sequence, every tier
// (layout.h, exchange.cuh), both directions (passes.cuh).
//
// Grid: NBG batch groups x NU CTAs (unit slices); CTA (bg, rank) owns units
// [rank*U, rank*U + U) of batch rows [bg*BG, bg*BG + BG) and keeps the weights of its
// units in shared memory for the whole launch. Per step s:
//   consume X_s (tier 1: nothing; 2: cluster barrier; 3: flags + cp.async, streamed in
//   passes) -> tensor-core matmul into part -> __syncthreads
//   -> pointwise: cell step in registers, outputs, put X_{s+1}, loads for step s+1
//   -> publish X_{s+1}.
// Shared memory: A (RP, lda) weights | X (nx, BG, ldx) | bias (RP) fp32 | stage | part.
#pragma once
#include "passes.cuh"

namespace fusedrnn {

// The CTA's weight slice into smem, once. When the rows of W_hh are 16-byte multiples (H*e),
// zero the slice, then copy each row segment with 16-byte cp.async (all in flight at once);
// otherwise (odd H, or a weight view off 16-byte alignment) element by element.
template <class Pass>
__device__ __forceinline__ void load_weights(typename Pass::Elem* A, const typename Pass::Params& p,
                                             const Layout& L, const Cta& c) {
  using T = typename Pass::Elem;
  constexpr int kVec = 16 / sizeof(T);
  if ((p.H * (int)sizeof(T)) % 16 != 0 || reinterpret_cast<uintptr_t>(Pass::weights(p)) % 16 != 0) {
    const int n = L.RP * L.Kp;
    for (int i = threadIdx.x; i < n; i += kThreads) {
      const int lr = i / L.Kp, k = i % L.Kp;
      A[(size_t)lr * L.lda + k] = Pass::weight(p, L, c, lr, k);
    }
    return;
  }
  uint4* z = reinterpret_cast<uint4*>(A);
  for (int i = threadIdx.x; i < L.RP * L.lda / kVec; i += kThreads) z[i] = make_uint4(0, 0, 0, 0);
  __syncthreads();
  const int pr = p.H / kVec, per_row = Pass::kWeightSegments * pr;
  for (int i = threadIdx.x; i < L.RP * per_row; i += kThreads) {
    const int lr = i / per_row, seg = (i % per_row) / pr, q = i % pr;
    const T* src = Pass::weight_segment(p, L, c, lr, seg);
    if (src != nullptr) cp_async16(A + (size_t)lr * L.lda + seg * L.Hp + q * kVec, src + q * kVec);
  }
  cp_async_wait_all();
}

template <class Pass>
__global__ void __launch_bounds__(kThreads, 1)
persistent_kernel(const typename Pass::Params p, const Layout L, const Workspace ws) {
  using T = typename Pass::Elem;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_abort;
  const Cta c = Cta::of(L, p.B, p.H);
  T* A = reinterpret_cast<T*>(smem + L.off_a);
  float* part = reinterpret_cast<float*>(smem + L.off_part);
  float* bias = reinterpret_cast<float*>(smem + L.off_bias);
  if (threadIdx.x == 0) s_abort = 0;
  uint4* zero = reinterpret_cast<uint4*>(smem + L.off_x);  // X, bias and stage: zero padding
  for (int i = threadIdx.x; i < (L.off_part - L.off_x) / 16; i += kThreads) zero[i] = make_uint4(0, 0, 0, 0);
  __syncthreads();
  load_weights<Pass>(A, p, L, c);
  Pass::load_bias(bias, p, L, c);
  const Exchange<T, Pass::kPublished> ex{L, c, reinterpret_cast<T*>(smem + L.off_x),
                                         reinterpret_cast<T*>(smem + L.off_stage), ws, &s_abort,
                                         Pass::kBackward ? 1 : 0};
  __syncthreads();
  ex.begin();
  typename Pass::Regs r;
  Pass::init(r, p, L, c, ex);
  if (Pass::kPublishesInitial) ex.publish(-1);
  const int n = Pass::steps(p);
  for (int s = 0; s < n; ++s) {
    const bool consumed = Pass::consumes(s);
    if (consumed) {
      if (L.tier == 3) {
        ex.stream_multiply(s, A, part);
      } else {
        ex.consume(s);
        step_matmul<T>(A, ex.operand(s), 0, part, L, 0, L.Kp / (32 / (int)sizeof(T)), false);
      }
      __syncthreads();
    }
    Pass::pointwise(r, p, L, c, ex, part, bias, s, consumed);
    if (s + 1 < n) ex.publish(s);
  }
  Pass::finish(r, p, c);
  ex.end();
}

}  // namespace fusedrnn
