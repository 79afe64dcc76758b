// The host build of the kernels (FUSEDRNN_EMULATE; tools/cuda_emu/build.py builds it): every CUDA
// thread runs as a fiber on the CPU, the 256 fibers of a CTA on one OS thread, all CTAs of
// a launch at once (so grid-wide flags and cluster barriers work). This header stands in for
// the inline PTX of device.cuh and for the CUDA built-ins the kernels use; emu.cpp holds the
// scheduler and the runtime. Beyond the arithmetic it checks:
//   - mma.sync and ldmatrix rebuild their matrices from all 32 lanes as the PTX ISA lays the
//     fragments out, so a wrong fragment address or lane mapping gives wrong numbers;
//   - a warp-collective primitive must find all 32 lanes at the same primitive;
//   - ldmatrix and cp.async destinations lie in the CTA's dynamic shared memory, 16-byte
//     aligned; cp.async sources are 16-byte aligned;
//   - a cp.async copy lands (and reads its source) only at the wait that covers it, the
//     latest a GPU may: reading the destination earlier sees the old bytes;
//   - shared memory starts as 0xff bytes (NaN in every float type), never zero;
//   - the fibers of a CTA run in the order FUSEDRNN_EMU_ORDER names (forward, reverse or
//     random), so a missing __syncthreads changes the result between orders;
//   - a launch running past FUSEDRNN_EMU_TIMEOUT seconds (default 120) is reported as a hang;
//   - FUSEDRNN_EMU_SLOW_CTA=cta:us makes one CTA sleep us microseconds at each __syncthreads,
//     so its consumers run ahead of it: one that reads an exchange round before its flag or
//     barrier says it was published reads the previous round's values (wrong results); it
//     sleeps as long right after each flag release too, so values a producer writes after
//     the flag that should guard them arrive late, and its consumers read stale ones;
//   - FUSEDRNN_EMU_MAX_CLUSTER=n: clusters of more than n CTAs neither fit (occupancy query)
//     nor launch, as on a GPU where the kernel's registers or shared memory rule them out.
//   - FUSEDRNN_EMU_REFUSE=cooperative,cluster: cooperative and/or cluster launches are refused
//     (cudaErrorCooperativeLaunchTooLarge), as under MPS or with busy SMs: AUTO's fallback runs.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>

namespace fusedrnn_emu {

// ---- the fiber scheduler (emu.cpp) ----
const uint3& thread_idx();
const uint3& block_idx();
const dim3& grid_dim();
const dim3& block_dim();
int lane();
[[noreturn]] void fail(const char* fmt, ...);  // a kernel error: report it and end the launch
void syncthreads();
void syncwarp();
void after_release();  // a flag was released (st_release): the slow CTA sleeps here too
// A warp collective: the 32 lanes hand `bytes` each; returns the 32 inputs packed in lane order,
// valid until this lane calls exchange_done(). `kind` names the primitive (divergence check).
const unsigned char* exchange(const void* mine, int bytes, const char* kind);
void exchange_done();
unsigned char* dynamic_smem();
void* static_shared(const void* key, size_t bytes);  // per CTA, 0xff-filled
void check_smem16(const void* p, const char* what);
void cp_async16(void* dst, const void* src);
void cp_async_commit();
void cp_async_wait(int n);
void cluster_arrive();
void cluster_wait();
uint32_t smem_addr(const void* p);
uint32_t map_rank(uint32_t addr, int rank);
void st_cluster16(uint32_t addr, uint4 v);
long long clock64();

// ---- kernels by address ----
using Invoker = void (*)(void**);
void register_kernel(const void* key, Invoker invoker);

template <class... A, size_t... I>
void call_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
  f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}
template <class... A>
void call_with(void (*f)(A...), void** args) {
  call_with(f, args, std::index_sequence_for<A...>{});
}
template <auto F>
void thunk(void** args) {
  call_with(F, args);
}
template <auto F>
const void* handle() {
  static const bool once = (register_kernel(reinterpret_cast<const void*>(F), &thunk<F>), true);
  (void)once;
  return reinterpret_cast<const void*>(F);
}

// ---- bit casts ----
template <class To, class From>
inline To bits(const From& x) {
  static_assert(sizeof(To) == sizeof(From), "same size");
  To r;
  std::memcpy(&r, &x, sizeof(To));
  return r;
}

// ---- the tensor-core fragments (PTX ISA, mma.m16n8k16 / m16n8k8, .row.col) ----
// 16-bit A (16x16): a[0] (gid, 2tig..+1), a[1] (gid+8, 2tig..), a[2] (gid, 2tig+8..), a[3] (gid+8, 2tig+8..)
// 16-bit B (16x8):  b[0] (k 2tig..+1, n gid), b[1] (k 2tig+8..+9, n gid)
// tf32 A (16x8): a[0] (gid, tig), a[1] (gid+8, tig), a[2] (gid, tig+4), a[3] (gid+8, tig+4)
// tf32 B (8x8):  b[0] (k tig, n gid), b[1] (k tig+4, n gid)
// C/D (16x8): d[0] (gid, 2tig), d[1] (gid, 2tig+1), d[2] (gid+8, 2tig), d[3] (gid+8, 2tig+1)
struct MmaIn {
  uint32_t a[4], b[2];
};

inline float half_at(uint32_t reg, int hi, const __half*) { return __half2float(bits<__half>((uint16_t)(reg >> (16 * hi)))); }
inline float half_at(uint32_t reg, int hi, const __nv_bfloat16*) {
  return __bfloat162float(bits<__nv_bfloat16>((uint16_t)(reg >> (16 * hi))));
}

template <typename T>
void mma16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  MmaIn mine;
  std::memcpy(mine.a, a, sizeof(mine.a));
  std::memcpy(mine.b, b, sizeof(mine.b));
  const MmaIn* all = reinterpret_cast<const MmaIn*>(exchange(&mine, sizeof(MmaIn), "mma.m16n8k16"));
  const int l = lane(), gid = l >> 2, tig = l & 3;
  auto A = [&](int r, int k) {
    const MmaIn& f = all[(r & 7) * 4 + ((k & 7) >> 1)];
    return half_at(f.a[(r >> 3) + 2 * (k >> 3)], k & 1, static_cast<const T*>(nullptr));
  };
  auto B = [&](int k, int n) {
    const MmaIn& f = all[n * 4 + ((k & 7) >> 1)];
    return half_at(f.b[k >> 3], k & 1, static_cast<const T*>(nullptr));
  };
  float out[4];
  for (int v = 0; v < 4; ++v) {
    const int r = gid + 8 * (v >> 1), n = 2 * tig + (v & 1);
    float acc = d[v];
    for (int k = 0; k < 16; ++k) acc += A(r, k) * B(k, n);
    out[v] = acc;
  }
  exchange_done();
  for (int v = 0; v < 4; ++v) d[v] = out[v];
}

inline float tf32_value(uint32_t reg) { return bits<float>(reg & 0xffffe000u); }  // the unit reads 19 bits

inline void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  MmaIn mine;
  std::memcpy(mine.a, a, sizeof(mine.a));
  mine.b[0] = b0;
  mine.b[1] = b1;
  const MmaIn* all = reinterpret_cast<const MmaIn*>(exchange(&mine, sizeof(MmaIn), "mma.m16n8k8.tf32"));
  const int l = lane(), gid = l >> 2, tig = l & 3;
  float out[4];
  for (int v = 0; v < 4; ++v) {
    const int r = gid + 8 * (v >> 1), n = 2 * tig + (v & 1);
    float acc = d[v];
    for (int k = 0; k < 8; ++k) {
      const float av = tf32_value(all[(r & 7) * 4 + (k & 3)].a[(r >> 3) + 2 * (k >> 2)]);
      const float bv = tf32_value(all[n * 4 + (k & 3)].b[k >> 2]);
      acc += av * bv;
    }
    out[v] = acc;
  }
  exchange_done();
  for (int v = 0; v < 4; ++v) d[v] = out[v];
}

// ldmatrix .m8n8 .b16: lanes 8i..8i+7 give the 8 row addresses (16 bytes each) of matrix i;
// lane l receives of each matrix the 4 bytes at row l/4, byte 4*(l%4).
template <int NM>
void ldmatrix(uint32_t (&r)[NM], const void* p) {
  check_smem16(p, "ldmatrix row address");
  const void* mine = p;
  const unsigned char* raw = exchange(&mine, sizeof(mine), NM == 4 ? "ldmatrix.x4" : "ldmatrix.x2");
  const int l = lane();
  uint32_t out[NM];
  for (int m = 0; m < NM; ++m) {
    const unsigned char* row;
    std::memcpy(&row, raw + sizeof(void*) * (m * 8 + l / 4), sizeof(row));
    std::memcpy(&out[m], row + 4 * (l % 4), 4);
  }
  exchange_done();
  for (int m = 0; m < NM; ++m) r[m] = out[m];
}

template <class V>
V shfl_xor(V v, int off) {
  const unsigned char* all = exchange(&v, sizeof(V), "shfl.xor");
  V r;
  std::memcpy(&r, all + sizeof(V) * (lane() ^ off), sizeof(V));
  exchange_done();
  return r;
}

inline int vote(int pred, bool any) {
  const int mine = pred != 0;
  const int* all = reinterpret_cast<const int*>(exchange(&mine, sizeof(int), any ? "vote.any" : "vote.all"));
  int r = any ? 0 : 1;
  for (int i = 0; i < 32; ++i) r = any ? (r | all[i]) : (r & all[i]);
  exchange_done();
  return r;
}

}  // namespace fusedrnn_emu

// ---- the CUDA built-ins, on the host ----
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef threadIdx
#undef blockIdx
#undef gridDim
#undef blockDim
#define threadIdx (::fusedrnn_emu::thread_idx())
#define blockIdx (::fusedrnn_emu::block_idx())
#define gridDim (::fusedrnn_emu::grid_dim())
#define blockDim (::fusedrnn_emu::block_dim())

#define FUSEDRNN_DYNAMIC_SMEM(name) unsigned char* const name = ::fusedrnn_emu::dynamic_smem()
#define FUSEDRNN_SHARED(type, name, dims)                                    \
  static const char name##_emu_key = 0;                                      \
  type(&name) dims = *reinterpret_cast<type(*) dims>(                        \
      ::fusedrnn_emu::static_shared(&name##_emu_key, sizeof(type dims)))
#define FUSEDRNN_KERNEL_HANDLE(...) (::fusedrnn_emu::handle<&__VA_ARGS__>())

inline void __syncthreads() { ::fusedrnn_emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::fusedrnn_emu::syncwarp(); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
template <class V>
inline V __shfl_xor_sync(unsigned, V v, int off) { return ::fusedrnn_emu::shfl_xor(v, off); }
inline int __any_sync(unsigned, int p) { return ::fusedrnn_emu::vote(p, true); }
inline int __all_sync(unsigned, int p) { return ::fusedrnn_emu::vote(p, false); }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline long long clock64() { return ::fusedrnn_emu::clock64(); }
inline unsigned atomicCAS(unsigned* p, unsigned expect, unsigned desired) {
  __atomic_compare_exchange_n(p, &expect, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return expect;
}
template <class V>
inline V __ldg(const V* p) { return *p; }
inline float __int_as_float(int x) { return ::fusedrnn_emu::bits<float>(x); }
inline float __uint_as_float(unsigned x) { return ::fusedrnn_emu::bits<float>(x); }
inline unsigned __float_as_uint(float x) { return ::fusedrnn_emu::bits<unsigned>(x); }
inline int __float_as_int(float x) { return ::fusedrnn_emu::bits<int>(x); }
[[noreturn]] inline void __trap() { ::fusedrnn_emu::fail("__trap()"); }
using std::max;
using std::min;

namespace fusedrnn {

// device.cuh's PTX block, emulated
inline uint32_t smem_addr(const void* p) { return ::fusedrnn_emu::smem_addr(p); }
inline void cp_async16(void* dst, const void* src) { ::fusedrnn_emu::cp_async16(dst, src); }
inline void cp_async_commit() { ::fusedrnn_emu::cp_async_commit(); }
template <int N>
inline void cp_async_wait() { ::fusedrnn_emu::cp_async_wait(N); }
inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) { ::fusedrnn_emu::ldmatrix<4>(r, p); }
inline void ldmatrix_x2(uint32_t (&r)[2], const void* p) { ::fusedrnn_emu::ldmatrix<2>(r, p); }
template <typename T>
inline void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  ::fusedrnn_emu::mma16<T>(d, a, b);
}
inline uint32_t cvt_tf32(float x) {  // cvt.rna: to nearest, ties away from zero, 10 mantissa bits
  uint32_t u = ::fusedrnn_emu::bits<uint32_t>(x);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  return u;
}
inline void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  ::fusedrnn_emu::mma_tf32(d, a, b0, b1);
}
inline unsigned ld_acquire(const unsigned* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline void st_release(unsigned* p, unsigned v) {
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
  fusedrnn_emu::after_release();
}
inline unsigned ld_relaxed(const unsigned* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline void fence_acq_rel_gpu() { __atomic_thread_fence(__ATOMIC_ACQ_REL); }
inline void cluster_arrive() { ::fusedrnn_emu::cluster_arrive(); }
inline void cluster_wait() { ::fusedrnn_emu::cluster_wait(); }
inline uint32_t map_rank(uint32_t addr, int rank) { return ::fusedrnn_emu::map_rank(addr, rank); }
inline void st_cluster16(uint32_t addr, uint4 v) { ::fusedrnn_emu::st_cluster16(addr, v); }

}  // namespace fusedrnn
