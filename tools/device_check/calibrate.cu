// Micro-benchmarks of the machine model's constants (fusedrnn/machine.py), built ahead into
// libfusedrnn_calibrate.so (tools/device_check/prebuilt.py) and called through ctypes by
// calibrate.py: plain C functions, each returns a cudaError_t (0: ok) and writes its result.
// Times come from the GPU's own clocks (%globaltimer in ns, clock64 in SM cycles), read by
// one thread around a loop of `iters` repetitions, so launch overheads stay out of them.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cluster_launch.cuh"  // csrc/
#include "device.cuh"          // csrc/: the kernels' own fusedrnn::st_release / ld_acquire, so the trip measured is theirs

namespace cg = cooperative_groups;

#define CAL_API extern "C" __attribute__((visibility("default")))
#define CHECK(x)                           \
  do {                                     \
    cudaError_t e_ = (x);                  \
    if (e_ != cudaSuccess) return (int)e_; \
  } while (0)

namespace {

__device__ __forceinline__ unsigned long long gtimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// ---- SM clock: cycles counted against nanoseconds over a ~2 ms spin -------------------------
__global__ void clock_kernel(unsigned long long* out, long long spin_ns) {
  const unsigned long long t0 = gtimer();
  const long long c0 = clock64();
  unsigned long long t = t0;
  while (t - t0 < (unsigned long long)spin_ns) t = gtimer();
  out[0] = t - t0;
  out[1] = (unsigned long long)(clock64() - c0);
}

// ---- cooperative grid sync, one CTA per SM --------------------------------------------------
__global__ void grid_sync_kernel(unsigned long long* out, int iters) {
  cg::grid_group grid = cg::this_grid();
  grid.sync();
  const unsigned long long t0 = gtimer();
  for (int i = 0; i < iters; ++i) grid.sync();
  if (blockIdx.x == 0 && threadIdx.x == 0) out[0] = gtimer() - t0;
}

// ---- flag ping-pong between two CTAs on different SMs ----------------------------------------
__device__ __forceinline__ unsigned smid() {
  unsigned s;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
  return s;
}

// Polls `flag` until it reads `want`; false after ~2^26 polls (the other CTA never ran: a
// plain launch does not promise that two CTAs are resident together).
__device__ __forceinline__ bool wait_for(const unsigned* flag, unsigned want) {
  for (int n = 0; n < (1 << 26); ++n)
    if (fusedrnn::ld_acquire(flag) == want) return true;
  return false;
}

// flags[0]: ping (CTA 0 -> 1), flags[32]: pong (1 -> 0), on separate 128-byte lines; out[3]
// is set when a wait gave up
__global__ void ping_pong_kernel(unsigned* flags, unsigned long long* out, int iters) {
  if (threadIdx.x != 0) return;
  unsigned* ping = flags;
  unsigned* pong = flags + 32;
  out[1 + blockIdx.x] = smid();
  if (blockIdx.x == 0) {
    const unsigned long long t0 = gtimer();
    for (int i = 1; i <= iters; ++i) {
      fusedrnn::st_release(ping, i);
      if (!wait_for(pong, i)) {
        out[3] = 1;
        fusedrnn::st_release(ping, ~0u);  // releases the other CTA too
        return;
      }
    }
    out[0] = gtimer() - t0;
  } else {
    for (int i = 1; i <= iters; ++i) {
      if (!wait_for(ping, i)) {
        out[3] = 1;
        return;
      }
      fusedrnn::st_release(pong, i);
    }
  }
}

// ---- L2 latency: one thread chasing pointers through a buffer L2 holds, L1 bypassed ----------
__global__ void chase_kernel(const unsigned* next, unsigned long long* out, int iters) {
  unsigned j = 0;
  for (int i = 0; i < 1024; ++i) j = __ldcg(next + j);  // warm-up: the lines come into L2
  const long long c0 = clock64();
  const unsigned long long t0 = gtimer();
  for (int i = 0; i < iters; ++i) j = __ldcg(next + j);
  out[0] = gtimer() - t0;
  out[1] = (unsigned long long)(clock64() - c0);
  out[2] = j;  // keeps the chain alive
}

// ---- cluster barrier, with and without global stores in flight before the arrive ------------
__global__ void cluster_barrier_kernel(float* sink, unsigned long long* out, int iters, int pending_stores) {
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const unsigned long long t0 = gtimer();
  float* mine = sink + (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (int i = 0; i < iters; ++i) {
    if (pending_stores) mine[(size_t)(i & 7) * stride] = (float)i;  // one 4-byte store per thread
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) out[0] = gtimer() - t0;
}

// ---- dependent mma.sync chains: each mma's accumulator is the next one's input ---------------
template <int KIND>  // 0 bf16 m16n8k16, 1 fp16 m16n8k16, 2 tf32 m16n8k8
__global__ void mma_chain_kernel(unsigned long long* out, int iters) {
  float d0 = threadIdx.x * 1e-3f, d1 = 0.f, d2 = 0.f, d3 = 0.f;
  const unsigned a0 = 0x3c003c00u ^ threadIdx.x, a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3, b0 = a0 + 5, b1 = a0 + 7;
  const long long c0 = clock64();
  for (int i = 0; i < iters; ++i) {
    if (KIND == 0) {
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                   "{%0,%1,%2,%3};"
                   : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                   : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    } else if (KIND == 1) {
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                   "{%0,%1,%2,%3};"
                   : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                   : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    } else {
      asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                   "{%0,%1,%2,%3};"
                   : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                   : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
  }
  const long long c1 = clock64();
  if (threadIdx.x == 0) {
    out[0] = (unsigned long long)(c1 - c0);
    out[1] = __float_as_uint(d0 + d1 + d2 + d3);
  }
}

// ---- warps issuing independent FMAs (8 chains each): instructions per cycle ----------------------
// One warp alone (cal_issue_ipc), or every warp of a CTA of 16, four per sub-partition, timed
// between two CTA barriers (cal_scheduler_ipc): how many warp instructions one scheduler issues
// per cycle when several warps take turns on it.
template <bool kCta>
__global__ void fma_chains_kernel(unsigned long long* out, int iters) {
  float x[8];
  for (int k = 0; k < 8; ++k) x[k] = threadIdx.x + k;
  if (kCta) __syncthreads();
  const long long c0 = clock64();
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] = fmaf(x[k], 1.0000001f, 0.5f);
  }
  if (kCta) __syncthreads();
  const long long c1 = clock64();
  float s = 0.f;
  for (int k = 0; k < 8; ++k) s += x[k];
  if (threadIdx.x == 0) {
    out[0] = (unsigned long long)(c1 - c0);
    out[1] = __float_as_uint(s);
  }
}

__global__ void empty_kernel() {}

// Runs `launch` (which launches into stream 0), waits, and copies `n` results back.
template <class F>
int run_and_read(unsigned long long* host, int n, F&& launch) {
  unsigned long long* dev = nullptr;
  CHECK(cudaMalloc(&dev, 8 * sizeof(unsigned long long)));
  CHECK(cudaMemset(dev, 0, 8 * sizeof(unsigned long long)));
  cudaError_t err = launch(dev);
  if (err == cudaSuccess) err = cudaDeviceSynchronize();
  if (err == cudaSuccess) err = cudaMemcpy(host, dev, n * sizeof(unsigned long long), cudaMemcpyDeviceToHost);
  cudaFree(dev);
  return (int)err;
}

}  // namespace

CAL_API int cal_device(int* sms, char* name, int name_len) {
  cudaDeviceProp p;
  CHECK(cudaGetDeviceProperties(&p, 0));
  *sms = p.multiProcessorCount;
  int i = 0;
  for (; i < name_len - 1 && p.name[i]; ++i) name[i] = p.name[i];
  name[i] = 0;
  return 0;
}

CAL_API int cal_clock_ghz(double* ghz) {
  unsigned long long r[2];
  int err = run_and_read(r, 2, [](unsigned long long* d) {
    clock_kernel<<<1, 1>>>(d, 2000000);
    return cudaGetLastError();
  });
  if (!err) *ghz = (double)r[1] / (double)r[0];
  return err;
}

CAL_API int cal_grid_barrier_us(int iters, double* us) {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  unsigned long long r[1];
  int err = run_and_read(r, 1, [&](unsigned long long* d) {
    void* args[] = {&d, &iters};
    return cudaLaunchCooperativeKernel((const void*)grid_sync_kernel, dim3(sms), dim3(128), args, 0, 0);
  });
  if (!err) *us = r[0] * 1e-3 / iters;
  return err;
}

CAL_API int cal_flag_one_way_us(int iters, double* us, int* same_sm) {
  unsigned* flags = nullptr;
  CHECK(cudaMalloc(&flags, 64 * sizeof(unsigned)));
  CHECK(cudaMemset(flags, 0, 64 * sizeof(unsigned)));
  // the most shared memory a CTA may have: the two CTAs cannot share an SM
  int smem = 0;
  CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  CHECK(cudaFuncSetAttribute((const void*)ping_pong_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  unsigned long long r[4];
  int err = run_and_read(r, 4, [&](unsigned long long* d) {
    ping_pong_kernel<<<2, 32, smem>>>(flags, d, iters);
    return cudaGetLastError();
  });
  cudaFree(flags);
  if (!err && r[3]) return (int)cudaErrorLaunchTimeout;  // the two CTAs were not resident together
  if (!err) {
    *us = r[0] * 1e-3 / iters / 2;  // a ping-pong is two one-way trips
    *same_sm = r[1] == r[2];
  }
  return err;
}

CAL_API int cal_l2_latency(int iters, double* us, double* cycles) {
  const unsigned n = 1u << 20;  // 4 MiB of indices: in L2 (50 MB), far beyond L1
  unsigned* host = new unsigned[n];
  const unsigned stride = 4099;   // odd, coprime to n: one cycle through every element, 16 KiB apart
  for (unsigned i = 0; i < n; ++i) host[i] = (i + stride) % n;
  unsigned* next = nullptr;
  cudaError_t e = cudaMalloc(&next, n * sizeof(unsigned));
  if (e == cudaSuccess) e = cudaMemcpy(next, host, n * sizeof(unsigned), cudaMemcpyHostToDevice);
  delete[] host;
  if (e != cudaSuccess) return (int)e;
  unsigned long long r[2];
  int err = run_and_read(r, 2, [&](unsigned long long* d) {
    chase_kernel<<<1, 1>>>(next, d, iters);
    return cudaGetLastError();
  });
  cudaFree(next);
  if (!err) {
    *us = r[0] * 1e-3 / iters;
    *cycles = (double)r[1] / iters;
  }
  return err;
}

CAL_API int cal_cluster_barrier_us(int cluster, int iters, int pending_stores, double* us) {
  float* sink = nullptr;
  const int threads = 256;
  CHECK(cudaMalloc(&sink, (size_t)8 * cluster * threads * sizeof(float)));
  if (cluster > 8)
    CHECK(cudaFuncSetAttribute((const void*)cluster_barrier_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  unsigned long long r[1];
  int err = run_and_read(r, 1, [&](unsigned long long* d) {
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t cfg = fusedrnn::cluster_launch_config(cluster, threads, 0, &attr);
    return cudaLaunchKernelEx(&cfg, cluster_barrier_kernel, sink, d, iters, pending_stores);
  });
  cudaFree(sink);
  if (!err) *us = r[0] * 1e-3 / iters;
  return err;
}

CAL_API int cal_mma_dep_cycles(int kind, int iters, double* cycles) {
  unsigned long long r[1];
  int err = run_and_read(r, 1, [&](unsigned long long* d) {
    if (kind == 0) mma_chain_kernel<0><<<1, 32>>>(d, iters);
    else if (kind == 1) mma_chain_kernel<1><<<1, 32>>>(d, iters);
    else mma_chain_kernel<2><<<1, 32>>>(d, iters);
    return cudaGetLastError();
  });
  if (!err) *cycles = (double)r[0] / iters;
  return err;
}

CAL_API int cal_issue_ipc(int iters, double* ipc) {
  unsigned long long r[1];
  int err = run_and_read(r, 1, [&](unsigned long long* d) {
    fma_chains_kernel<false><<<1, 32>>>(d, iters);
    return cudaGetLastError();
  });
  if (!err) *ipc = 8.0 * iters / (double)r[0];  // 8 FMAs per iteration (the loop's own 2-3 not counted)
  return err;
}

CAL_API int cal_scheduler_ipc(int iters, double* ipc) {
  const int warps = 16, schedulers = 4;
  unsigned long long r[1];
  int err = run_and_read(r, 1, [&](unsigned long long* d) {
    fma_chains_kernel<true><<<1, 32 * warps>>>(d, iters);
    return cudaGetLastError();
  });
  if (!err) *ipc = 8.0 * iters * warps / schedulers / (double)r[0];
  return err;
}

// Back-to-back empty launches on one stream, timed by events: the launch rate's inverse.
CAL_API int cal_launch_us(int launches, double* us) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 100; ++i) empty_kernel<<<1, 32>>>();
  CHECK(cudaEventRecord(a));
  for (int i = 0; i < launches; ++i) empty_kernel<<<1, 32>>>();
  CHECK(cudaEventRecord(b));
  CHECK(cudaEventSynchronize(b));
  float ms = 0;
  CHECK(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  *us = ms * 1e3 / launches;
  return 0;
}

CAL_API const char* cal_error_string(int err) { return cudaGetErrorString((cudaError_t)err); }
