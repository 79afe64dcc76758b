// The per-cell entry points: fill the kernels' parameters from the checked arguments,
// plan, and hand both kernels (persistent, per-step) to the one launch path (launch.cuh).
// Instantiated once per cell by csrc/kernels/<cell>.cu (FUSEDRNN_INSTANTIATE).
#pragma once
#include <stdexcept>
#include <string>

#include "entry.h"
#include "launch.cuh"
#include "persistent.cuh"
#include "step.cuh"

namespace fusedrnn {

constexpr long long kDefaultSpinLimit = 1LL << 32;  // ~2 s of clock cycles before a flag wait reports

template <typename T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr const char* name = "fp32"; };
template <> struct DTypeOf<__half> { static constexpr const char* name = "fp16"; };
template <> struct DTypeOf<__nv_bfloat16> { static constexpr const char* name = "bf16"; };

template <class Cell, typename T>
std::string kernel_name(const char* pass) {
  return std::string(Cell::name) + "_" + pass + "<" + DTypeOf<T>::name + ">";
}

template <class Params>
std::string launch_pass(Params p, const Plan& plan, const Launch& l, const DeviceLimits& dev, const Kernels& k,
                        int steps, void* workspace, long long workspace_bytes, const std::string& name) {
  if (workspace_bytes < plan.ws_bytes)
    throw std::invalid_argument("fusedrnn._C: " + name + ": the workspace has " + std::to_string(workspace_bytes) +
                                " bytes, the plan needs " + std::to_string(plan.ws_bytes));
  char* base = static_cast<char*>(workspace);
  Workspace ws{reinterpret_cast<unsigned*>(base), reinterpret_cast<unsigned*>(base + plan.off_flags),
               base + plan.off_xbuf, l.spin_limit > 0 ? l.spin_limit : kDefaultSpinLimit};
  StepWorkspace sw{base + plan.off_hbuf, reinterpret_cast<float*>(base + plan.off_state)};
  Layout L = plan.L;
  StepGeometry geo = plan.step;
  int s = 0;
  void* pargs[] = {&p, &L, &ws};
  void* sargs[] = {&p, &geo, &sw, &s};
  return run(cuda_runtime(), plan, l, dev, k, pargs, sargs, &s, steps, workspace, name);
}

template <class Cell, typename T>
std::string forward_typed(const ForwardArgs& a) {
  using P = FwdPass<Cell, T>;
  typename P::Params p{a.T, a.B, a.H, a.reverse ? 1 : 0, static_cast<const T*>(a.gx), static_cast<const T*>(a.h0),
                       static_cast<const T*>(a.c0), static_cast<const T*>(a.w), static_cast<const T*>(a.bias),
                       a.lengths, static_cast<T*>(a.y), static_cast<T*>(a.hT), static_cast<T*>(a.cT), a.saved};
  const DeviceLimits dev = device_limits(a.launch.device);
  const Plan plan = make_plan(plan_request(false, a.cell, a.dtype, a.B, a.H, a.launch), dev);
  const Kernels k{reinterpret_cast<const void*>(&persistent_kernel<P>),
                  reinterpret_cast<const void*>(&fwd_step_kernel<Cell, T>)};
  return launch_pass(p, plan, a.launch, dev, k, a.T, a.workspace, a.workspace_bytes, kernel_name<Cell, T>("fwd"));
}

template <class Cell, typename T>
std::string backward_typed(const BackwardArgs& a) {
  using P = BwdPass<Cell, T>;
  T* d_gx = static_cast<T*>(a.d_gx);
  typename P::Params p{a.T, a.B, a.H, a.reverse ? 1 : 0, static_cast<const T*>(a.dy), static_cast<const T*>(a.dhT),
                       static_cast<const T*>(a.dcT), static_cast<const T*>(a.wt), a.lengths, a.saved, d_gx,
                       a.d_gh ? static_cast<T*>(a.d_gh) : d_gx, static_cast<T*>(a.dh0), static_cast<T*>(a.dc0)};
  const DeviceLimits dev = device_limits(a.launch.device);
  const Plan plan = make_plan(plan_request(true, a.cell, a.dtype, a.B, a.H, a.launch), dev);
  const Kernels k{reinterpret_cast<const void*>(&persistent_kernel<P>),
                  reinterpret_cast<const void*>(&bwd_step_kernel<Cell, T>)};
  return launch_pass(p, plan, a.launch, dev, k, a.T + 1, a.workspace, a.workspace_bytes,
                     kernel_name<Cell, T>("bwd"));
}

template <class Cell>
std::string forward_cell(const ForwardArgs& a) {
  switch (a.dtype) {
    case DType::F32: return forward_typed<Cell, float>(a);
    case DType::F16: return forward_typed<Cell, __half>(a);
    case DType::BF16: return forward_typed<Cell, __nv_bfloat16>(a);
    default: throw std::invalid_argument("fusedrnn._C: unsupported dtype");
  }
}
template <class Cell>
std::string backward_cell(const BackwardArgs& a) {
  switch (a.dtype) {
    case DType::F32: return backward_typed<Cell, float>(a);
    case DType::F16: return backward_typed<Cell, __half>(a);
    case DType::BF16: return backward_typed<Cell, __nv_bfloat16>(a);
    default: throw std::invalid_argument("fusedrnn._C: unsupported dtype");
  }
}

}  // namespace fusedrnn

#define FUSEDRNN_INSTANTIATE(CELL)                                     \
  namespace fusedrnn {                                                 \
  template std::string forward_cell<CELL>(const ForwardArgs&);         \
  template std::string backward_cell<CELL>(const BackwardArgs&);       \
  }
