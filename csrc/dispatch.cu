// Dispatch on the cell to the per-cell instantiations; the real CUDA runtime of the
// launcher and the device's limits (read once per device).
#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>

#include "cells/gru.cuh"
#include "cells/gru_reset_before.cuh"
#include "cells/lstm.cuh"
#include "cells/rnn.cuh"
#include "entry.h"
#include "launch.cuh"

namespace fusedrnn {

const char* cell_name(Cell c) { return cell_info(c).name; }

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::I32: return "int32";
    case DType::U8: return "uint8";
  }
  return "?";
}

// The cells with a fused decode step (cell_step): every cell but the GRU with its reset gate
// before the product, which by_recurrence_cell adds.
template <class F>
static auto by_cell(Cell c, F&& f) {
  switch (c) {
    case Cell::LSTM: return f(LstmCell{});
    case Cell::GRU: return f(GruCell{});
    case Cell::RNN_TANH: return f(RnnTanhCell{});
    default: return f(RnnReluCell{});
  }
}
template <class F>
static auto by_recurrence_cell(Cell c, F&& f) {
  if (c == Cell::GRU_RESET_BEFORE) return f(GruResetBeforeCell{});
  return by_cell(c, f);
}

std::string forward(const ForwardArgs& a) {
  return by_recurrence_cell(a.cell, [&](auto cell) { return forward_cell<decltype(cell)>(a); });
}

std::string backward(const BackwardArgs& a) {
  return by_recurrence_cell(a.cell, [&](auto cell) { return backward_cell<decltype(cell)>(a); });
}

std::string cell_step(const CellStepArgs& a) {
  if (a.cell == Cell::GRU_RESET_BEFORE)
    throw std::invalid_argument(std::string("fusedrnn._C: cell_step: ") + cell_name(a.cell) +
                                " has no fused decode step (fusedrnn runs its step as the recurrence at T = 1)");
  return by_cell(a.cell, [&](auto cell) { return cell_step_cell<decltype(cell)>(a); });
}

#if !defined(FUSEDRNN_EMULATE)  // the host build has its own runtime and device (tools/cuda_emu/emu.cpp)
namespace {

class CudaRuntime final : public Runtime {
 public:
  cudaError_t get_device(int* device) override { return cudaGetDevice(device); }
  cudaError_t set_device(int device) override { return cudaSetDevice(device); }
  cudaError_t set_attribute(const void* kernel, cudaFuncAttribute attr, int value) override {
    return cudaFuncSetAttribute(kernel, attr, value);
  }
  cudaError_t memset_async(void* p, size_t bytes, cudaStream_t stream) override {
    return bytes ? cudaMemsetAsync(p, 0, bytes, stream) : cudaSuccess;
  }
  cudaError_t launch(const void* kernel, int grid_x, int grid_y, int smem, int cluster, bool cooperative,
                     cudaStream_t stream, void** args) override {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid_x, grid_y, 1);
    cfg.blockDim = dim3(kThreads, 1, 1);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attrs[2];
    int n = 0;
    if (cluster > 0) {
      attrs[n].id = cudaLaunchAttributeClusterDimension;
      attrs[n].val.clusterDim.x = cluster;
      attrs[n].val.clusterDim.y = 1;
      attrs[n].val.clusterDim.z = 1;
      ++n;
    }
    if (cooperative) {
      attrs[n].id = cudaLaunchAttributeCooperative;
      attrs[n].val.cooperative = 1;
      ++n;
    }
    cfg.attrs = attrs;
    cfg.numAttrs = n;
    return cudaLaunchKernelExC(&cfg, kernel, args);
  }
  void clear_error() override { cudaGetLastError(); }
  // asked once per (kernel, device, cluster, smem): the answer is a property of the compiled kernel
  int max_active_clusters(const void* kernel, int cluster, int smem) override {
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) {
      cudaGetLastError();
      return -1;
    }
    const auto key = std::make_tuple(kernel, device, cluster, smem);
    {
      std::lock_guard<std::mutex> lock(occupancy_mu_);
      auto it = occupancy_.find(key);
      if (it != occupancy_.end()) return it->second;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(cluster, 1, 1);
    cfg.blockDim = dim3(kThreads, 1, 1);
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = cluster;
    attr.val.clusterDim.y = 1;
    attr.val.clusterDim.z = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    int n = 0;
    if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
      cudaGetLastError();
      n = -1;  // unknown: keep the plan (a refused launch still falls back in AUTO)
    }
    std::lock_guard<std::mutex> lock(occupancy_mu_);
    occupancy_[key] = n;
    return n;
  }

 private:
  std::mutex occupancy_mu_;
  std::map<std::tuple<const void*, int, int, int>, int> occupancy_;
};

}  // namespace

Runtime& cuda_runtime() {
  static CudaRuntime rt;
  return rt;
}

DeviceLimits device_limits(int device) {
  static std::mutex mu;
  static DeviceLimits cache[64];
  std::lock_guard<std::mutex> lock(mu);
  DeviceLimits& d = cache[device & 63];
  if (d.sms == 0) {
    DeviceLimits n;
    cudaError_t err;
    auto get = [&](int* v, cudaDeviceAttr attr) {
      err = cudaDeviceGetAttribute(v, attr, device);
      return err == cudaSuccess;
    };
    if (!(get(&n.sms, cudaDevAttrMultiProcessorCount) && get(&n.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin) &&
          get(&n.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor) &&
          get(&n.regs_per_sm, cudaDevAttrMaxRegistersPerMultiprocessor) &&
          get(&n.cc_major, cudaDevAttrComputeCapabilityMajor) && get(&n.cc_minor, cudaDevAttrComputeCapabilityMinor) &&
          get(&n.cooperative, cudaDevAttrCooperativeLaunch))) {
      cudaGetLastError();
      fail("cannot use CUDA device " + std::to_string(device), err);
    }
    n.max_cluster = n.cc_major >= 9 ? machine::limits::max_cluster : 0;  // with the non-portable attribute
    d = n;
  }
  return d;
}

#endif  // !FUSEDRNN_EMULATE

Plan plan_on_device(const PlanRequest& r, int device) {
  if (r.cell < 0) return make_plan(r, device_limits(device));
  return by_recurrence_cell((Cell)r.cell, [&](auto cell) { return plan_cell<decltype(cell)>(r, device); });
}

#if !defined(FUSEDRNN_EMULATE)
int device_count(std::string* error) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (error) *error = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    cudaGetLastError();
    return 0;
  }
  return n;
}

#endif  // !FUSEDRNN_EMULATE

}  // namespace fusedrnn
