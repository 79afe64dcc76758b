// Device helpers shared by the kernels: dtype conversion, L2 loads, sizes.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace fusedrnn {

constexpr int kThreads = 256;          // threads per block, every kernel
constexpr int kWarps = kThreads / 32;
constexpr int kMaxRows = 64;           // weight rows a persistent block keeps (MMA: 8 n-tiles)

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }
__host__ __device__ constexpr int round_up(int a, int b) { return ceil_div(a, b) * b; }

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Loads of data other blocks wrote during this kernel go to L2 (ld.global.cg); the grid
// barrier orders them (release/acquire), this keeps them out of the non-coherent L1.
__device__ __forceinline__ float ldcg(const float* p) { return __ldcg(p); }
__device__ __forceinline__ __half ldcg(const __half* p) {
  return __ushort_as_half(__ldcg(reinterpret_cast<const unsigned short*>(p)));
}
__device__ __forceinline__ __nv_bfloat16 ldcg(const __nv_bfloat16* p) {
  return __ushort_as_bfloat16(__ldcg(reinterpret_cast<const unsigned short*>(p)));
}
// raw 16-bit pattern of a half/bf16 element, read through L2
template <typename T>
__device__ __forceinline__ uint32_t ldcg_bits16(const T* p) {
  return __ldcg(reinterpret_cast<const unsigned short*>(p));
}

// Is step t part of sequence b? (lengths null: always)
__device__ __forceinline__ bool is_active(const int32_t* lengths, int b, int t) {
  return lengths == nullptr || t < lengths[b];
}

}  // namespace fusedrnn
