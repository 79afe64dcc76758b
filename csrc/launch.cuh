// Host side of the kernels: choose persistent vs per-step, size shared memory, check
// occupancy, launch on the caller's stream, turn CUDA errors into exceptions naming the
// kernel. Nothing here allocates device memory or synchronises (CUDA-graph safe).
#pragma once
#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <string>

#include "api.h"
#include "backward.cuh"
#include "forward.cuh"

namespace fusedrnn {

template <typename T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr const char* name = "fp32"; };
template <> struct DTypeOf<__half> { static constexpr const char* name = "fp16"; };
template <> struct DTypeOf<__nv_bfloat16> { static constexpr const char* name = "bf16"; };

struct DeviceInfo { int sms = 0, smem_optin = 0, coop = 0; };

[[noreturn]] inline void fail(const std::string& what, cudaError_t err) {
  throw std::runtime_error("fusedrnn._C: " + what + ": " + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + ")");
}

// Select the device and read (once per device) what the plan needs.
inline DeviceInfo use_device(int device) {
  cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) fail("cannot use CUDA device " + std::to_string(device), err);
  static std::mutex mu;
  static DeviceInfo cache[64];
  std::lock_guard<std::mutex> lock(mu);
  DeviceInfo& d = cache[device & 63];
  if (d.sms == 0) {
    DeviceInfo n;
    if ((err = cudaDeviceGetAttribute(&n.sms, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess ||
        (err = cudaDeviceGetAttribute(&n.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device)) !=
            cudaSuccess ||
        (err = cudaDeviceGetAttribute(&n.coop, cudaDevAttrCooperativeLaunch, device)) != cudaSuccess)
      fail("cudaDeviceGetAttribute on device " + std::to_string(device), err);
    d = n;
  }
  return d;
}

inline int align16(int n) { return round_up(n, 16); }

// Layout of the persistent kernel for one block of U units. mma: 16-bit tensor-core path.
inline Geometry persistent_geometry(int K, int RPU, int U, int B, int esize, bool mma, int smem_limit) {
  Geometry g{};
  g.K = K; g.RPU = RPU; g.U = U;
  g.RP = round_up(RPU * U, 8);
  g.ldw = round_up(K, 16) + 8;  // +8 elements: the 8 fragment rows hit distinct banks
  const int w_bytes = align16(g.RP * g.ldw * esize);
  if (mma) {
    g.BC = g.BCP = B < 64 ? round_up(B, 16) : 64;
    const int MT = g.BCP / 16, nks = ceil_div(K, 16);
    g.KS = std::max(1, std::min(kWarps / MT, nks));
    g.stage = 0;
    g.off_w = 0; g.off_x = w_bytes; g.off_part = w_bytes;
    g.smem = g.off_part + align16(g.KS * g.BCP * g.RP * 4);
    return g;
  }
  g.KS = 1;
  for (int bc : {32, 16, 8, 4}) {  // stage the largest chunk of input vectors that fits
    g.BC = g.BCP = std::min(B, bc);
    const int x_bytes = align16(g.BC * K * esize), part = align16(g.BC * g.RP * 4);
    g.stage = 1; g.off_w = 0; g.off_x = w_bytes; g.off_part = w_bytes + x_bytes;
    g.smem = g.off_part + part;
    if (g.smem <= smem_limit) return g;
  }
  g.BC = g.BCP = std::min(B, 32);  // no room: read the vectors from L2 directly
  g.stage = 0; g.off_w = 0; g.off_x = w_bytes; g.off_part = w_bytes;
  g.smem = g.off_part + align16(g.BC * g.RP * 4);
  return g;
}

// Per-step fallback: small blocks over (units, batch), weights from global memory.
inline Geometry step_geometry(int K, int RPU, int B) {
  Geometry g{};
  g.K = K; g.RPU = RPU; g.U = 4;
  g.RP = round_up(RPU * g.U, 8);
  g.ldw = K;
  g.BC = g.BCP = std::min(B, 32);
  g.KS = 1; g.stage = 0;
  g.off_w = g.off_x = g.off_part = 0;
  g.smem = align16(g.BC * g.RP * 4);
  return g;
}

// Batch rows per block of the step kernels: BC, or a multiple of it so grid.y <= 65535.
inline int batch_rows_per_block(int B, int BC) {
  const int chunks = ceil_div(B, BC), per_block = ceil_div(chunks, 65535);
  return per_block * BC;
}

struct Chosen {
  bool persistent;
  Geometry geo;
  int blocks;
  std::string reason;
};

// Persistent if the weight slices fit in shared memory of co-resident blocks; else the
// per-step fallback with the reason. kernel: the persistent kernel (for occupancy).
template <typename T>
Chosen choose_plan(const void* kernel, bool mma, int K, int RPU, int B, int H, const DeviceInfo& dev,
                   Mode mode, const std::string& name) {
  Chosen c{false, step_geometry(K, RPU, B), 0, ""};
  const int esize = sizeof(T);
  const int U = ceil_div(H, dev.sms), blocks = ceil_div(H, U);
  if (mode == Mode::STEP) {
    c.reason = "per-step mode was requested";
  } else if (!dev.coop) {
    c.reason = "the device does not support cooperative launches";
  } else if (RPU * U > kMaxRows) {
    c.reason = "H=" + std::to_string(H) + " needs " + std::to_string(RPU * U) +
               " weight rows per block (at most " + std::to_string(kMaxRows) + ")";
  } else {
    Geometry g = persistent_geometry(K, RPU, U, B, esize, mma, dev.smem_optin);
    if (g.smem > dev.smem_optin) {
      c.reason = "the weight slice needs " + std::to_string(g.smem) + " bytes of shared memory per block, the device offers " +
                 std::to_string(dev.smem_optin);
    } else {
      cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, g.smem);
      if (err != cudaSuccess) fail(name + ": cudaFuncSetAttribute", err);
      int per_sm = 0;
      err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, g.smem);
      if (err != cudaSuccess) fail(name + ": cudaOccupancyMaxActiveBlocksPerMultiprocessor", err);
      if (per_sm * dev.sms < blocks) {
        c.reason = std::to_string(blocks) + " blocks cannot be co-resident (" + std::to_string(per_sm) +
                   " per SM × " + std::to_string(dev.sms) + " SMs)";
      } else {
        c.persistent = true; c.geo = g; c.blocks = blocks;
        return c;
      }
    }
  }
  if (mode == Mode::PERSISTENT)
    throw std::runtime_error("fusedrnn._C: " + name + ": the persistent kernel cannot run: " + c.reason);
  c.blocks = ceil_div(H, c.geo.U);
  return c;
}

inline void check_launch(const std::string& name) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) fail("kernel " + name + " failed to launch", err);
}

template <class Cell, typename T>
std::string kernel_name(const char* pass) {
  return std::string(Cell::name) + "_" + pass + "<" + DTypeOf<T>::name + ">";
}

template <class Cell, typename T>
void forward_typed(const ForwardArgs& a) {
  constexpr bool MMA = sizeof(T) == 2;
  const DeviceInfo dev = use_device(a.launch.device);
  cudaGetLastError();  // clear a stale error of this runtime so it is not blamed on us
  FwdParams<T> p;
  p.steps = a.T; p.B = a.B; p.H = a.H; p.reverse = a.reverse;
  p.gx = static_cast<const T*>(a.gx); p.h0 = static_cast<const T*>(a.h0);
  p.c0 = static_cast<const T*>(a.c0); p.w = static_cast<const T*>(a.w);
  p.bias = static_cast<const T*>(a.bias); p.lengths = a.lengths;
  p.y = static_cast<T*>(a.y); p.hT = static_cast<T*>(a.hT); p.cT = static_cast<T*>(a.cT);
  p.saved = a.saved; p.hbuf = static_cast<T*>(a.hbuf);
  p.hstate = a.state; p.cstate = a.state + (size_t)a.B * a.H;
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(a.launch.stream);
  const void* pk = reinterpret_cast<const void*>(&fwd_persistent_kernel<Cell, T, MMA>);
  const std::string name = kernel_name<Cell, T>("fwd");
  Chosen c = choose_plan<T>(pk, MMA, a.H, Cell::G, a.B, a.H, dev, a.launch.mode, name);
  if (c.persistent) {
    void* args[] = {&p, &c.geo};
    cudaError_t err = cudaLaunchCooperativeKernel(pk, dim3(c.blocks), dim3(kThreads), args, c.geo.smem, stream);
    if (err != cudaSuccess) fail("kernel " + name + "_persistent failed to launch", err);
    check_launch(name + "_persistent");
    return;
  }
  const int rows = batch_rows_per_block(a.B, c.geo.BC);
  const dim3 grid(c.blocks, ceil_div(a.B, rows));
  for (int s = 0; s < a.T; ++s) {
    fwd_step_kernel<Cell, T><<<grid, kThreads, c.geo.smem, stream>>>(p, c.geo, s, rows);
    check_launch(name + "_step");
  }
}

template <class Cell, typename T>
void backward_typed(const BackwardArgs& a) {
  constexpr bool MMA = sizeof(T) == 2;
  const DeviceInfo dev = use_device(a.launch.device);
  cudaGetLastError();
  BwdParams<T> p;
  p.steps = a.T; p.B = a.B; p.H = a.H; p.reverse = a.reverse;
  p.dy = static_cast<const T*>(a.dy); p.dhT = static_cast<const T*>(a.dhT);
  p.dcT = static_cast<const T*>(a.dcT); p.wt = static_cast<const T*>(a.wt);
  p.lengths = a.lengths; p.saved = a.saved;
  p.d_gx = static_cast<T*>(a.d_gx);
  p.d_gh = a.d_gh ? static_cast<T*>(a.d_gh) : p.d_gx;
  p.dh0 = static_cast<T*>(a.dh0); p.dc0 = static_cast<T*>(a.dc0);
  p.dstate = a.state; p.cstate = a.state + (size_t)a.B * a.H;
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(a.launch.stream);
  const void* pk = reinterpret_cast<const void*>(&bwd_persistent_kernel<Cell, T, MMA>);
  const std::string name = kernel_name<Cell, T>("bwd");
  Chosen c = choose_plan<T>(pk, MMA, Cell::G * a.H, 1, a.B, a.H, dev, a.launch.mode, name);
  if (c.persistent) {
    void* args[] = {&p, &c.geo};
    cudaError_t err = cudaLaunchCooperativeKernel(pk, dim3(c.blocks), dim3(kThreads), args, c.geo.smem, stream);
    if (err != cudaSuccess) fail("kernel " + name + "_persistent failed to launch", err);
    check_launch(name + "_persistent");
    return;
  }
  const int rows = batch_rows_per_block(a.B, c.geo.BC);
  const dim3 grid(c.blocks, ceil_div(a.B, rows));
  for (int s = 0; s <= a.T; ++s) {
    bwd_step_kernel<Cell, T><<<grid, kThreads, c.geo.smem, stream>>>(p, c.geo, s, rows);
    check_launch(name + "_step");
  }
}

template <class Cell, typename T>
PlanInfo plan_typed(bool backward, int B, int H, int device, Mode mode) {
  constexpr bool MMA = sizeof(T) == 2;
  const DeviceInfo dev = use_device(device);
  const void* pk = backward ? reinterpret_cast<const void*>(&bwd_persistent_kernel<Cell, T, MMA>)
                            : reinterpret_cast<const void*>(&fwd_persistent_kernel<Cell, T, MMA>);
  const int K = backward ? Cell::G * H : H, RPU = backward ? 1 : Cell::G;
  Chosen c = choose_plan<T>(pk, MMA, K, RPU, B, H, dev, mode, kernel_name<Cell, T>(backward ? "bwd" : "fwd"));
  return PlanInfo{c.persistent, c.geo.U, c.blocks, c.geo.BC, c.geo.smem, c.geo.KS, c.reason};
}

// Per-cell entry points, dispatching on the dtype; explicitly instantiated once per cell
// by csrc/kernels/<cell>.cu (FUSEDRNN_INSTANTIATE), called from dispatch.cu.
template <class Cell>
void forward_cell(const ForwardArgs& a) {
  switch (a.dtype) {
    case DType::F32: return forward_typed<Cell, float>(a);
    case DType::F16: return forward_typed<Cell, __half>(a);
    case DType::BF16: return forward_typed<Cell, __nv_bfloat16>(a);
    default: throw std::invalid_argument("fusedrnn._C: unsupported dtype");
  }
}
template <class Cell>
void backward_cell(const BackwardArgs& a) {
  switch (a.dtype) {
    case DType::F32: return backward_typed<Cell, float>(a);
    case DType::F16: return backward_typed<Cell, __half>(a);
    case DType::BF16: return backward_typed<Cell, __nv_bfloat16>(a);
    default: throw std::invalid_argument("fusedrnn._C: unsupported dtype");
  }
}
template <class Cell>
PlanInfo plan_cell(bool backward, DType dtype, int B, int H, int device, Mode mode) {
  switch (dtype) {
    case DType::F32: return plan_typed<Cell, float>(backward, B, H, device, mode);
    case DType::F16: return plan_typed<Cell, __half>(backward, B, H, device, mode);
    case DType::BF16: return plan_typed<Cell, __nv_bfloat16>(backward, B, H, device, mode);
    default: throw std::invalid_argument("fusedrnn._C: unsupported dtype");
  }
}

}  // namespace fusedrnn

#define FUSEDRNN_INSTANTIATE(CELL)                                                                     \
  namespace fusedrnn {                                                                                 \
  template void forward_cell<CELL>(const ForwardArgs&);                                                \
  template void backward_cell<CELL>(const BackwardArgs&);                                              \
  template PlanInfo plan_cell<CELL>(bool, DType, int, int, int, Mode);                                 \
  }
