// The fused decode step: one launch computes x W_ihᵀ + b_ih and h W_hhᵀ + b_hh for every
// gate row and applies the cell's pointwise update (csrc/cells, the recurrence's own math).
//
// Dimensions: B batch, I input size, H hidden units, G gates, NB batch rows per CTA (1 or
// 8), UB units per CTA, KW warps per unit (UB * KW = 8 warps), V elements per 16 bytes.
//
// Memory-bound on the weights (decode: B is small, every weight byte is used B times): each
// byte is read once, by one thread, in 16-byte loads that stay out of L1; the G rows of a
// unit are read by the KW warps of that unit in the same pass, so the pointwise needs no
// exchange between CTAs. x and h0 rows are read through L1 (the CTA's other units reuse
// them). Per thread: partial sums per (row, slot); a slot is one gate (its x and h parts
// summed) or, for a gate whose h part the cell needs apart (GRU's n: r ⊙ (W_hn h + b_hn)),
// one extra slot. The sums meet in a halving butterfly across the warp, then in shared
// memory across the KW warps; UB * NB threads then run the cell.
#pragma once
#include <type_traits>

#include "cells/gru.cuh"
#include "device.cuh"

namespace fusedrnn {

template <typename T>
struct CellStepParams {
  int B, I, H;
  int vec;                 // 1: every row is a 16-byte multiple and 16-byte aligned: vector loads
  const T* x;              // (B, I)
  const T* h0;             // (B, H)
  const T* c0;             // (B, H) LSTM only, else null
  const T* w_ih;           // (G*H, I)
  const T* w_hh;           // (G*H, H)
  const T* b_ih;           // (G*H,) or null
  const T* b_hh;           // (G*H,) or null
  T* h;                    // (B, H) out
  T* c;                    // (B, H) out, LSTM only
};

struct CellStepShape {
  int UB, KW;
};

// Gates whose h part the cell takes apart from the x part (GRU: the last one).
template <class Cell>
__host__ __device__ constexpr int separate_gh() { return std::is_same<Cell, GruCell>::value ? 1 : 0; }

__device__ __forceinline__ float4 ldg_stream(const float4* p) {
#if defined(FUSEDRNN_EMULATE)
  return *p;
#else
  float4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.f32 {%0,%1,%2,%3}, [%4];\n"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "l"(p));
  return v;
#endif
}

// 16 bytes of T as fp32 values.
template <typename T> struct Vec16;
template <> struct Vec16<float> {
  static constexpr int V = 4;
  __device__ static void unpack(const float4& r, float (&o)[V]) { o[0] = r.x; o[1] = r.y; o[2] = r.z; o[3] = r.w; }
};
template <> struct Vec16<__half> {
  static constexpr int V = 8;
  __device__ static void unpack(const float4& r, float (&o)[V]) {
    const __half2* h = reinterpret_cast<const __half2*>(&r);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(h[i]);
      o[2 * i] = f.x;
      o[2 * i + 1] = f.y;
    }
  }
};
template <> struct Vec16<__nv_bfloat16> {
  static constexpr int V = 8;
  __device__ static void unpack(const float4& r, float (&o)[V]) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&r);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(h[i]);
      o[2 * i] = f.x;
      o[2 * i + 1] = f.y;
    }
  }
};

// acc[b][slot] += Σ_k v[b][k] W[g*H + j][k] over this thread's k: vector and scalar paths.
// base: the slot of gate g's part of this matrix (g itself, or the separate slot).
template <typename T, int NB, int G, int NS, int SEP>
__device__ __forceinline__ void accumulate(float (&acc)[NB][NS], const T* v, int K, int nb, const T* w, int H, int j,
                                           bool h_part, int tu, int stride, bool vec) {
  auto slot = [&](int g) { return (h_part && g >= G - SEP) ? G + g - (G - SEP) : g; };
  if (vec) {
    using U = Vec16<T>;
    constexpr int V = U::V;
    const int nv = K / V;
#pragma unroll 2
    for (int q = tu; q < nv; q += stride) {
      float4 raw[G];
#pragma unroll
      for (int g = 0; g < G; ++g) raw[g] = ldg_stream(reinterpret_cast<const float4*>(w + ((size_t)g * H + j) * K) + q);
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        if (b >= nb) break;
        float xv[V];
        U::unpack(__ldg(reinterpret_cast<const float4*>(v + (size_t)b * K) + q), xv);
#pragma unroll
        for (int g = 0; g < G; ++g) {
          float wv[V];
          U::unpack(raw[g], wv);
          float a = acc[b][slot(g)];
#pragma unroll
          for (int e = 0; e < V; ++e) a = fmaf(xv[e], wv[e], a);
          acc[b][slot(g)] = a;
        }
      }
    }
    return;
  }
  for (int k = tu; k < K; k += stride) {
    float wv[G];
#pragma unroll
    for (int g = 0; g < G; ++g) wv[g] = to_f(w[((size_t)g * H + j) * K + k]);
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      if (b >= nb) break;
      const float xv = to_f(v[(size_t)b * K + k]);
#pragma unroll
      for (int g = 0; g < G; ++g) acc[b][slot(g)] = fmaf(xv, wv[g], acc[b][slot(g)]);
    }
  }
}

// Sum N values (a power of two <= 32) over the warp: each step keeps half the values and
// adds the partner's copy of that half. Lane l ends with value l >> (5 - log2 N) in v[0].
template <int N>
__device__ __forceinline__ float warp_sum_all(float (&v)[N]) {
  const int lane = threadIdx.x & 31;
  int n = N;
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    if (n > 1) {
      const bool upper = (lane & off) != 0;
      const int half = n / 2;
#pragma unroll
      for (int i = 0; i < N / 2; ++i) {
        if (i >= half) break;
        const float send = upper ? v[i] : v[i + half];
        const float keep = upper ? v[i + half] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, off);
      }
      n = half;
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], off);
    }
  }
  return v[0];
}

template <int N>
__host__ __device__ constexpr int log2_of() { return N <= 1 ? 0 : 1 + log2_of<N / 2>(); }
template <int N>
__host__ __device__ constexpr int pow2_at_least() { return N <= 1 ? 1 : 2 * pow2_at_least<(N + 1) / 2>(); }

template <class Cell, typename T, int NB>
__global__ void __launch_bounds__(kThreads, 2)
cell_step_kernel(const CellStepParams<T> p, const CellStepShape shape) {
  constexpr int G = Cell::G, SEP = separate_gh<Cell>(), NS = G + SEP;
  constexpr int N = pow2_at_least<NB * NS>();  // values per thread, padded to a power of two
  static_assert(N <= 32, "one value per lane after the butterfly");
  constexpr int SHIFT = 5 - log2_of<N>();
  FUSEDRNN_SHARED(float, red, [kWarps][32]);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int ui = warp / shape.KW, kp = warp % shape.KW;
  const int j = blockIdx.x * shape.UB + ui, b0 = blockIdx.y * NB, nb = min(NB, p.B - b0);
  const bool vec = p.vec != 0;
  float acc[NB][NS];
#pragma unroll
  for (int b = 0; b < NB; ++b)
#pragma unroll
    for (int s = 0; s < NS; ++s) acc[b][s] = 0.0f;
  if (j < p.H) {  // warp-uniform
    const int tu = kp * 32 + lane, stride = shape.KW * 32;
    accumulate<T, NB, G, NS, SEP>(acc, p.x + (size_t)b0 * p.I, p.I, nb, p.w_ih, p.H, j, false, tu, stride, vec);
    accumulate<T, NB, G, NS, SEP>(acc, p.h0 + (size_t)b0 * p.H, p.H, nb, p.w_hh, p.H, j, true, tu, stride, vec);
  }
  float v[N];
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] = i < NB * NS ? acc[i / NS][i % NS] : 0.0f;
  red[warp][lane] = warp_sum_all<N>(v);
  __syncthreads();
  const int t = threadIdx.x, u = t / NB, b = t % NB, jj = blockIdx.x * shape.UB + u;
  if (u >= shape.UB || b >= nb || jj >= p.H) return;
  float sum[NS];
#pragma unroll
  for (int s = 0; s < NS; ++s) {
    float a = 0.0f;
    for (int w = 0; w < shape.KW; ++w) a += red[u * shape.KW + w][(b * NS + s) << SHIFT];
    sum[s] = a;
  }
  float gx[G], gh[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float bi = p.b_ih ? to_f(p.b_ih[g * p.H + jj]) : 0.0f, bh = p.b_hh ? to_f(p.b_hh[g * p.H + jj]) : 0.0f;
    if (g >= G - SEP) {
      gx[g] = sum[g] + bi;
      gh[g] = sum[G + g - (G - SEP)] + bh;
    } else {
      gx[g] = sum[g] + bi + bh;
      gh[g] = 0.0f;
    }
  }
  const size_t bj = (size_t)(b0 + b) * p.H + jj;
  float hn, cn, save[Cell::S];
  Cell::forward(gx, gh, to_f(p.h0[bj]), Cell::HAS_C ? to_f(p.c0[bj]) : 0.0f, &hn, &cn, save);
  p.h[bj] = from_f<T>(hn);
  if (Cell::HAS_C) p.c[bj] = from_f<T>(cn);
}

}  // namespace fusedrnn
