// Device primitives shared by the kernels: dtype conversion, asynchronous copies,
// ldmatrix, tensor-core mma per 32-byte k-step, gpu-scope flags, cluster operations.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>

#include "layout.h"

// FUSEDRNN_EMULATE: the host build of the kernels (tools/cuda_emu), which runs each CUDA thread as a
// fiber on the CPU so that tests can run the kernels without a GPU. It replaces the inline-PTX
// primitives below (the block marked PTX) and these three declarations.
#if defined(FUSEDRNN_EMULATE)
#include "emu.h"  // tools/cuda_emu, on the host build's include path
#else
// the dynamic shared memory of a kernel, as `unsigned char name[]`
#define FUSEDRNN_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
// a static __shared__ variable of a kernel: FUSEDRNN_SHARED(int, flag, ), FUSEDRNN_SHARED(float, red, [8][32])
#define FUSEDRNN_SHARED(type, name, dims) __shared__ type name dims
// a __global__ function as the launcher hands it to the runtime
#define FUSEDRNN_KERNEL_HANDLE(...) reinterpret_cast<const void*>(&__VA_ARGS__)
#endif

namespace fusedrnn {

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// n / d and n % d for a divisor d >= 1 fixed for the launch, as a multiply-high, an add and a
// shift (Granlund and Montgomery's round-up method): exact for 0 <= n < 2^31. A division by a
// runtime int costs ~15 instructions; the step loops' index math divides by layout fields.
struct FastDiv {
  int d;
  unsigned mul, shift;
  __host__ __device__ static FastDiv of(int d) {
    unsigned l = 0;
    while ((1ull << l) < (unsigned long long)d) ++l;  // l = ceil(log2 d)
    const unsigned long long m = (((1ull << l) - (unsigned long long)d) << 32) / (unsigned long long)d + 1;
    return FastDiv{d, (unsigned)m, l};
  }
  __host__ __device__ int div(int n) const {
    const unsigned t = (unsigned)(((unsigned long long)mul * (unsigned)n) >> 32);
    return (int)((t + (unsigned)n) >> shift);
  }
  __host__ __device__ int mod(int n, int q) const { return n - q * d; }  // q = div(n)
};

template <typename T> struct DTypeOf;  // the dtype's name in messages
template <> struct DTypeOf<float> { static constexpr const char* name = "fp32"; };
template <> struct DTypeOf<__half> { static constexpr const char* name = "fp16"; };
template <> struct DTypeOf<__nv_bfloat16> { static constexpr const char* name = "bf16"; };

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// ---- PTX: the primitives tools/cuda_emu/emu.h replaces in the host build ----
#if !defined(FUSEDRNN_EMULATE)
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, through L2 only (.cg: data other CTAs wrote this launch).
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// wait until at most N committed groups of this thread's copies are still in flight
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}


// d += a · b on the tensor cores, fragments as the PTX ISA lays them out for mma.sync.
template <typename T> __device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4],
                                                                 const uint32_t (&b)[2]);
template <> __device__ __forceinline__ void mma_m16n8k16<__half>(float (&d)[4], const uint32_t (&a)[4],
                                                                const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> __device__ __forceinline__ void mma_m16n8k16<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                                       const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ uint32_t cvt_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// gpu-scope flags of the grid tier: a producer releases "chunk published", consumers acquire.
__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_release(unsigned* p, unsigned v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}
// A poll that does not order later accesses (nothing waits for it until its value is used),
// and the fence that, after a relaxed load saw a release, makes that load an acquire.
__device__ __forceinline__ unsigned ld_relaxed(const unsigned* p) {
  unsigned v;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void fence_acq_rel_gpu() { asm volatile("fence.acq_rel.gpu;\n" ::: "memory"); }

// Thread-block clusters (sm_90): rank, barrier halves, stores into another CTA's smem.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FUSEDRNN_CLUSTERS 1
__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ uint32_t map_rank(uint32_t addr, int rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(addr), "r"(rank));
  return r;
}
__device__ __forceinline__ void st_cluster16(uint32_t addr, uint4 v) {
  asm volatile("st.shared::cluster.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(v.z),
               "r"(v.w)
               : "memory");
}
#else
#define FUSEDRNN_CLUSTERS 0
__device__ __forceinline__ void cluster_arrive() { __trap(); }
__device__ __forceinline__ void cluster_wait() { __trap(); }
__device__ __forceinline__ uint32_t map_rank(uint32_t, int) { __trap(); return 0; }
__device__ __forceinline__ void st_cluster16(uint32_t, uint4) { __trap(); }
#endif

#endif  // !FUSEDRNN_EMULATE
// ---- end of PTX ----

// One 32-byte k-step of a 16x8 tile: d += a(16 rows x 32 bytes) * b(8 rows x 32 bytes)ᵀ.
// a, b as ldmatrix leaves them (rows of 16-bit pairs; for fp32 each register is one value).
template <typename T> struct MmaStep {
  __device__ static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    mma_m16n8k16<T>(d, a, b);
  }
};
// fp32: three tf32 products (big*big + big*small + small*big, x = big + small), which
// keeps about fp32 accuracy on the tensor cores; the small*small term (2^-22) is dropped.
// A non-finite value (inf, NaN) lives in its big part alone: its small part is 0 and the
// cross products see its big part as 0, so inf * w gives inf as in fp32, never inf - inf
// (a NaN small part) or inf * 0 (a cross product with the other side's zero small part).
__device__ __forceinline__ void split_tf32(uint32_t x_bits, uint32_t& big, uint32_t& small, uint32_t& big_if_finite) {
  const float x = __uint_as_float(x_bits);
  const bool finite = fabsf(x) <= 3.40282347e+38f;  // false for inf and NaN
  big = cvt_tf32(x);
  small = finite ? cvt_tf32(x - __uint_as_float(big)) : 0u;
  big_if_finite = finite ? big : 0u;
}
template <> struct MmaStep<float> {
  __device__ static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    uint32_t ab[4], as[4], af[4], bb[2], bs[2], bf[2];
#pragma unroll
    for (int i = 0; i < 4; ++i) split_tf32(a[i], ab[i], as[i], af[i]);
#pragma unroll
    for (int i = 0; i < 2; ++i) split_tf32(b[i], bb[i], bs[i], bf[i]);
    mma_m16n8k8_tf32(d, as, bf[0], bf[1]);
    mma_m16n8k8_tf32(d, af, bs[0], bs[1]);
    mma_m16n8k8_tf32(d, ab, bb[0], bb[1]);
  }
};

__device__ __forceinline__ void cp_async_wait_all() {
  cp_async_commit();
  cp_async_wait<0>();
}

}  // namespace fusedrnn
