// Host side of every launch: the one launch path of both directions and all tiers.
// Select the device (and restore the caller's), zero the workspace's flags, set each
// kernel's attributes once, launch the planned tier on the caller's stream and, in AUTO
// mode, fall back to the per-step kernels when the device refuses a cooperative or
// cluster launch. Nothing here allocates device memory or synchronises (graph-safe).
// The CUDA calls go through `Runtime`, so a fake runtime can drive this logic without a GPU
// (tools/cuda_selftest: a recording one; tools/cuda_emu: the emulator's, which can refuse launches).
#pragma once
#include <cuda_runtime.h>

#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>

#include "api.h"

namespace fusedrnn {

[[noreturn]] inline void fail(const std::string& what, cudaError_t err) {
  throw std::runtime_error("fusedrnn._C: " + what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                           ")");
}

class Runtime {
 public:
  virtual ~Runtime() = default;
  virtual cudaError_t get_device(int* device) = 0;
  virtual cudaError_t set_device(int device) = 0;
  virtual cudaError_t set_attribute(const void* kernel, cudaFuncAttribute attr, int value) = 0;
  virtual cudaError_t memset_async(void* p, size_t bytes, cudaStream_t stream) = 0;
  virtual cudaError_t launch(const void* kernel, int grid_x, int grid_y, int smem, int cluster, bool cooperative,
                             cudaStream_t stream, void** args) = 0;
  virtual void clear_error() = 0;
  // cudaOccupancyMaxActiveClusters for `kernel` launched in clusters of `cluster` CTAs with
  // `smem` bytes of dynamic shared memory (its attributes configured); < 0 if the query failed
  virtual int max_active_clusters(const void* kernel, int cluster, int smem) = 0;
  std::mutex mu;
  std::set<std::pair<const void*, int>> configured;  // (kernel, device) whose attributes are set
};

Runtime& cuda_runtime();  // the real one (dispatch.cu)

// The caller's current device is restored on exit (torch keeps its own notion of it).
class DeviceGuard {
 public:
  DeviceGuard(Runtime& rt, int device) : rt_(rt) {
    cudaError_t err = rt.get_device(&prev_);
    if (err != cudaSuccess) fail("cannot use CUDA device " + std::to_string(device), err);
    if (prev_ != device) {
      err = rt.set_device(device);
      if (err != cudaSuccess) fail("cannot use CUDA device " + std::to_string(device), err);
      changed_ = true;
    }
  }
  ~DeviceGuard() {
    if (changed_) rt_.set_device(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  Runtime& rt_;
  int prev_ = 0;
  bool changed_ = false;
};

// Once per (kernel, device): the dynamic smem limit to the opt-in maximum (never lowered
// afterwards, so concurrent calls cannot race between set and launch), and cluster sizes
// past the portable 8 where the device has them.
inline void configure(Runtime& rt, const void* kernel, int device, const DeviceLimits& dev, const std::string& name) {
  std::lock_guard<std::mutex> lock(rt.mu);
  if (rt.configured.count({kernel, device})) return;
  cudaError_t err = rt.set_attribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     dev.smem_optin - kStaticSmemReserve);
  if (err != cudaSuccess) fail(name + ": cudaFuncSetAttribute(MaxDynamicSharedMemorySize)", err);
  if (dev.max_cluster > machine::limits::portable_cluster) {
    err = rt.set_attribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (err != cudaSuccess) fail(name + ": cudaFuncSetAttribute(NonPortableClusterSizeAllowed)", err);
  }
  rt.configured.insert({kernel, device});
}

// The plan whose clusters the device can hold for the real persistent kernel (plan.h,
// make_plan_fitted).
inline Plan fitted_plan(Runtime& rt, const PlanRequest& r, const DeviceLimits& dev, const void* kernel, int device,
                        const std::string& name) {
  return make_plan_fitted(r, dev, [&](int cluster, int smem) {
    DeviceGuard guard(rt, device);
    configure(rt, kernel, device, dev, name);
    return rt.max_active_clusters(kernel, cluster, smem);
  });
}

struct Kernels {
  const void* persistent;
  const void* step[kMaxStages];  // the per-step kernels, one per stage (plan.nstep), in order
};

// Launch `plan` on `l.stream`. pargs: the persistent kernel's arguments; sargs: the step
// kernels', whose geometry *geo, step index *s and direction *d are set here before each of
// the directions x steps x stages per-step launches.
inline std::string run(Runtime& rt, const Plan& plan, const Launch& l, const DeviceLimits& dev, const Kernels& k,
                       void** pargs, void** sargs, StepGeometry* geo, int* s, int* d, int directions, int steps,
                       void* workspace, const std::string& name) {
  if (!plan.ok)
    throw std::runtime_error("fusedrnn._C: " + name + ": the " + mode_name(l.mode) + " mode cannot run: " +
                             plan.reason);
  DeviceGuard guard(rt, l.device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(l.stream);
  cudaError_t err = rt.memset_async(workspace, (size_t)plan.ws_zeroed, stream);
  if (err != cudaSuccess) fail(name + ": zeroing the workspace", err);
  std::string note;
  if (plan.tier != Tier::STEP) {
    const std::string what = std::string(tier_name(plan.tier)) + " launch of " + name + "_persistent (" +
                             std::to_string(plan.grid) + " CTAs" +
                             (plan.cluster ? ", clusters of " + std::to_string(plan.cluster) : "") + ", " +
                             std::to_string(plan.L.smem) + " bytes of shared memory)";
    configure(rt, k.persistent, l.device, dev, name);
    err = rt.launch(k.persistent, plan.grid, 1, plan.L.smem, plan.cluster, plan.cooperative, stream, pargs);
    if (err == cudaSuccess) return note;
    rt.clear_error();  // a refused launch is not sticky
    if (l.mode != Mode::AUTO) fail("the " + what + " failed", err);
    note = "the " + what + " was refused (" + cudaGetErrorName(err) + "); ran the per-step kernels instead";
  }
  for (*d = 0; *d < directions; ++*d) {
    for (*s = 0; *s < steps; ++*s) {
      for (int kk = 0; kk < plan.nstep; ++kk) {
        *geo = plan.step[kk];
        err = rt.launch(k.step[kk], geo->grid_x, geo->grid_y, geo->smem, 0, false, stream, sargs);
        if (err != cudaSuccess)
          fail("kernel " + name + "_step" + (plan.nstep > 1 ? std::to_string(kk) : std::string()) + " (step " +
                   std::to_string(*s) + (directions > 1 ? ", direction " + std::to_string(*d) : std::string()) +
                   ") failed to launch",
               err);
      }
    }
  }
  return note;
}

}  // namespace fusedrnn
