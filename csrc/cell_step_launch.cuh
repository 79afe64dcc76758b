// Host side of the fused decode step: plan (cell_step_plan.cpp), pick the kernel for the
// dtype and rows per CTA, launch on the caller's stream. No allocation, no synchronisation,
// no attribute call (static shared memory only): CUDA-graph capturable.
#pragma once
#include <stdexcept>
#include <string>

#include "api.h"
#include "cell_step.cuh"
#include "cell_step_plan.h"
#include "launch.cuh"

namespace fusedrnn {

template <class Cell, typename T>
std::string cell_step_typed(const CellStepArgs& a) {
  const DeviceLimits dev = device_limits(a.device);
  CellStepRequest r;
  r.G = Cell::G; r.esize = sizeof(T); r.B = a.B; r.I = a.I; r.H = a.H;
  const CellStepPlan plan = make_cell_step_plan(r, dev);
  auto aligned = [](const void* q) { return reinterpret_cast<std::uintptr_t>(q) % 16 == 0; };
  const bool vec = (a.I * (int)sizeof(T)) % 16 == 0 && (a.H * (int)sizeof(T)) % 16 == 0 && aligned(a.x) &&
                   aligned(a.h0) && aligned(a.w_ih) && aligned(a.w_hh);
  CellStepParams<T> p{a.B, a.I, a.H, vec ? 1 : 0, static_cast<const T*>(a.x), static_cast<const T*>(a.h0),
                      static_cast<const T*>(a.c0), static_cast<const T*>(a.w_ih), static_cast<const T*>(a.w_hh),
                      static_cast<const T*>(a.b_ih), static_cast<const T*>(a.b_hh), static_cast<T*>(a.h),
                      static_cast<T*>(a.c)};
  CellStepShape shape{plan.UB, plan.KW};
  const void* kernel = plan.NB == 1 ? FUSEDRNN_KERNEL_HANDLE(cell_step_kernel<Cell, T, 1>)
                                    : FUSEDRNN_KERNEL_HANDLE(cell_step_kernel<Cell, T, 8>);
  void* args[] = {&p, &shape};
  Runtime& rt = cuda_runtime();
  DeviceGuard guard(rt, a.device);
  const cudaError_t err = rt.launch(kernel, plan.grid_x, plan.grid_y, 0, 0, false,
                                    reinterpret_cast<cudaStream_t>(a.stream), args);
  if (err != cudaSuccess)
    fail(std::string("kernel ") + Cell::name + "_cell_step<" + DTypeOf<T>::name + "> failed to launch", err);
  return "";
}

template <class Cell>
std::string cell_step_cell(const CellStepArgs& a) {
  switch (a.dtype) {
    case DType::F32: return cell_step_typed<Cell, float>(a);
    case DType::F16: return cell_step_typed<Cell, __half>(a);
    case DType::BF16: return cell_step_typed<Cell, __nv_bfloat16>(a);
    default: throw std::invalid_argument("fusedrnn._C: unsupported dtype");
  }
}

}  // namespace fusedrnn
