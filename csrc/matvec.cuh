// The step matmul of a block: part[ks][bb][lr] = Σ_k x[bb][k] · w[lr][k] over its slice.
//
//   x     (nb, K) rows of the vector exchanged between steps (h_{t-1}, or d_gh of the
//         previous backward step), row stride K; global memory or a staged copy in smem
//   w     weight rows: row (g, u) at w + (g*w_gs + u)*ldw (smem slice: w_gs = U)
//   part  (KS, BCP, RP) fp32 in shared memory; the caller sums the KS slices in order,
//         so results are bitwise reproducible (no atomics).
#pragma once
#include "device.cuh"
#include "geometry.cuh"

namespace fusedrnn {

// --- plain FMA (fp32, and every dtype in the per-step fallback) -------------------------
// Work item: 4 batch rows × the RPU rows of one unit; the lanes split k, a butterfly
// shuffle reduces. Register tile 4×RPU (≤ 16 accumulators).
template <typename T, int RPU>
__device__ void matvec_fma(float* part, const T* x, int nb, const T* w, int w_gs, int ldw,
                           int nu, const Geometry& geo) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int K = geo.K, nq = ceil_div(nb, 4);
  for (int item = warp; item < nq * nu; item += kWarps) {
    const int bq = item / nu, u = item % nu;
    const T* xr[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int bb = bq * 4 + i;
      xr[i] = x + (size_t)(bb < nb ? bb : 0) * K;  // rows past nb re-read row 0; never stored
    }
    const T* wr[RPU];
#pragma unroll
    for (int g = 0; g < RPU; ++g) wr[g] = w + (size_t)(g * w_gs + u) * ldw;
    float acc[4][RPU];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int g = 0; g < RPU; ++g) acc[i][g] = 0.0f;
    for (int k = lane; k < K; k += 32) {
      float wv[RPU];
#pragma unroll
      for (int g = 0; g < RPU; ++g) wv[g] = to_f(wr[g][k]);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float xv = to_f(xr[i][k]);
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
      for (int i = 0; i < 4; ++i) {
        const int bb = bq * 4 + i;
        if (bb < nb) {
#pragma unroll
          for (int g = 0; g < RPU; ++g) part[bb * geo.RP + g * geo.U + u] = acc[i][g];
        }
      }
    }
  }
}

// --- tensor cores: mma.sync m16n8k16, fp32 accumulate (sm_80+) --------------------------
template <typename T> struct Mma;
template <> struct Mma<__half> {
  __device__ static void run(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <> struct Mma<__nv_bfloat16> {
  __device__ static void run(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

// A fragment element pair (row, k), (row, k+1) straight from global memory through L2,
// zero outside the valid rows / k < K (odd K and ragged batch chunks need no padding).
template <typename T>
__device__ __forceinline__ uint32_t load_a_pair(const T* row, bool row_ok, int k, int K) {
  const uint32_t lo = (row_ok && k < K) ? ldcg_bits16(row + k) : 0u;
  const uint32_t hi = (row_ok && k + 1 < K) ? ldcg_bits16(row + k + 1) : 0u;
  return lo | (hi << 16);
}

// M = batch (16-row tiles), N = weight rows (8-row tiles, ≤ 8 of them), K split over
// warps when there are fewer M tiles than warps. ws: the smem slice, zero-padded to
// round_up(K,16) columns and RP rows, row stride ldw (even, so pairs are 4-byte aligned).
template <typename T>
__device__ void matvec_mma(float* part, const T* x, int nb, const T* ws, const Geometry& geo) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gid = lane >> 2, tig = lane & 3;
  const int K = geo.K, MT = geo.BCP / 16, NTN = geo.RP / 8, nks = ceil_div(K, 16);
  for (int unit = warp; unit < MT * geo.KS; unit += kWarps) {
    const int mt = unit % MT, ks = unit / MT;
    const int kb = ks * nks / geo.KS, ke = (ks + 1) * nks / geo.KS;
    const int r0 = mt * 16 + gid, r1 = r0 + 8;
    const bool ok0 = r0 < nb, ok1 = r1 < nb;
    const T* x0 = x + (size_t)(ok0 ? r0 : 0) * K;
    const T* x1 = x + (size_t)(ok1 ? r1 : 0) * K;
    float acc[kMaxRows / 8][4];
#pragma unroll
    for (int n = 0; n < kMaxRows / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    for (int kt = kb; kt < ke; ++kt) {
      const int k = kt * 16 + 2 * tig;
      uint32_t a[4];
      a[0] = load_a_pair(x0, ok0, k, K);
      a[1] = load_a_pair(x1, ok1, k, K);
      a[2] = load_a_pair(x0, ok0, k + 8, K);
      a[3] = load_a_pair(x1, ok1, k + 8, K);
#pragma unroll
      for (int n = 0; n < kMaxRows / 8; ++n) {
        if (n < NTN) {
          const T* wp = ws + (size_t)(n * 8 + gid) * geo.ldw + k;
          const uint32_t b0 = *reinterpret_cast<const uint32_t*>(wp);
          const uint32_t b1 = *reinterpret_cast<const uint32_t*>(wp + 8);
          Mma<T>::run(acc[n], a, b0, b1);
        }
      }
    }
    float* p0 = part + ((size_t)ks * geo.BCP + r0) * geo.RP + 2 * tig;
    float* p1 = p0 + 8 * geo.RP;
#pragma unroll
    for (int n = 0; n < kMaxRows / 8; ++n) {
      if (n < NTN) {
        p0[n * 8] = acc[n][0]; p0[n * 8 + 1] = acc[n][1];
        p1[n * 8] = acc[n][2]; p1[n * 8 + 1] = acc[n][3];
      }
    }
  }
}

// Sum of the KS split-K slices of part for (bb, lr), in a fixed order.
__device__ __forceinline__ float part_sum(const float* part, const Geometry& geo, int bb, int lr) {
  float a = 0.0f;
  for (int ks = 0; ks < geo.KS; ++ks) a += part[((size_t)ks * geo.BCP + bb) * geo.RP + lr];
  return a;
}

// The whole matmul stage of one batch chunk: stages x if the plan says so (FMA), runs
// the MMA or FMA matvec, ends with the block synchronised and part filled.
//   x_src (nb, K) global rows of the exchanged vector, w as for matvec_fma
template <typename T, int RPU, bool MMA>
__device__ void block_matvec(char* smem, const T* x_src, int nb, const T* w, int w_gs, int ldw,
                             int nu, const Geometry& geo) {
  float* part = reinterpret_cast<float*>(smem + geo.off_part);
  if constexpr (MMA) {
    matvec_mma<T>(part, x_src, nb, w, geo);
  } else {
    const T* x = x_src;
    if (geo.stage) {
      T* xs = reinterpret_cast<T*>(smem + geo.off_x);
      for (int i = threadIdx.x; i < nb * geo.K; i += kThreads) xs[i] = ldcg(x_src + i);
      __syncthreads();
      x = xs;
    }
    matvec_fma<T, RPU>(part, x, nb, w, w_gs, ldw, nu, geo);
  }
  __syncthreads();
}

// Copy a block's weight slice to shared memory once, zero-padding rows and columns.
//   w (RPU*H, K) global, row g*H + j0 + u  ->  ws[(g*U + u) * ldw + k]
template <typename T>
__device__ void load_weight_slice(T* ws, const T* w, int H, int j0, int nu, const Geometry& geo) {
  const int total = geo.RP * geo.ldw;
  for (int i = threadIdx.x; i < total; i += kThreads) {
    const int lr = i / geo.ldw, k = i % geo.ldw;
    const int g = lr / geo.U, u = lr % geo.U;
    const bool ok = g < geo.RPU && u < nu && k < geo.K;
    ws[i] = ok ? w[((size_t)g * H + j0 + u) * geo.K + k] : from_f<T>(0.0f);
  }
}

}  // namespace fusedrnn
