// The per-cell entry points: fill the kernels' parameters from the checked arguments,
// plan, and hand the kernels (persistent, per-step per stage) to the one launch path
// (launch.cuh). The LSTM's projection kernels are instantiated by csrc/kernels/lstm.cu only,
// the two-stage kernels of the GRU with its reset gate before the product by
// csrc/kernels/gru_reset_before.cu only. Instantiated once per cell by csrc/kernels/<cell>.cu
// (FUSEDRNN_INSTANTIATE; FUSEDRNN_INSTANTIATE_RECURRENCE for a cell without a fused decode step).
#pragma once
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cells/lstm.cuh"
#include "entry.h"
#include "launch.cuh"
#include "persistent.cuh"
#include "step.cuh"
#include "step_reset.cuh"

namespace fusedrnn {

constexpr long long kDefaultSpinLimit = 1LL << 32;  // ~2 s of clock cycles before a flag wait reports

template <class Cell, typename T>
std::string kernel_name(const char* pass) {
  return std::string(Cell::name) + "_" + pass + "<" + DTypeOf<T>::name + ">";
}

template <class Params>
std::string launch_pass(Params p, const Plan& plan, const Launch& l, const DeviceLimits& dev, const Kernels& k,
                        int directions, int steps, void* workspace, long long workspace_bytes,
                        const std::string& name) {
  if (workspace_bytes < plan.ws_bytes)
    throw std::invalid_argument("fusedrnn._C: " + name + ": the workspace has " + std::to_string(workspace_bytes) +
                                " bytes, the plan needs " + std::to_string(plan.ws_bytes));
  char* base = static_cast<char*>(workspace);
  Workspace ws{reinterpret_cast<unsigned*>(base), reinterpret_cast<unsigned*>(base + plan.off_flags),
               base + plan.off_xbuf, l.spin_limit > 0 ? l.spin_limit : kDefaultSpinLimit};
  float* state = reinterpret_cast<float*>(base + plan.off_state);
  StepWorkspace sw{base + plan.off_hbuf, base + plan.off_mbuf, state, state + (size_t)p.B * p.P};
  Layout L = plan.L;
  StepGeometry geo = plan.step[0];
  int s = 0, d = 0;
  void* pargs[] = {&p, &L, &ws};
  void* sargs[] = {&p, &geo, &sw, &s, &d};
  return run(cuda_runtime(), plan, l, dev, k, pargs, sargs, &geo, &s, &d, directions, steps, workspace, name);
}

// The kernels of one pass: forward (backward) of Cell in T, with the projection's if proj, the
// regularised ones (zoneout, recurrent dropout) if masked.
template <class Cell, typename T>
Kernels pass_kernels(bool backward, bool proj, bool masked = false) {
  if constexpr (std::is_same<Cell, LstmCell>::value) {
    if (proj && !backward)
      return Kernels{FUSEDRNN_KERNEL_HANDLE(persistent_kernel<FwdProjPass<T>>),
                     {FUSEDRNN_KERNEL_HANDLE(fwd_step_kernel<FwdProjPass<T>>),
                      FUSEDRNN_KERNEL_HANDLE(fwd_proj_step_kernel<T>)}};
    if (proj)
      return Kernels{FUSEDRNN_KERNEL_HANDLE(persistent_kernel<BwdProjPass<T>>),
                     {FUSEDRNN_KERNEL_HANDLE(bwd_proj_dh_step_kernel<T>),
                      FUSEDRNN_KERNEL_HANDLE(bwd_step_kernel<BwdProjPass<T>>)}};
  }
  if (proj) throw std::invalid_argument("fusedrnn._C: a projection (w_hr) exists only for the lstm cell");
  if constexpr (std::is_same<Cell, GruResetBeforeCell>::value) {
    // no regularised twin: make_masks refuses masks for this cell (validate.cpp)
    if (masked) throw std::invalid_argument("fusedrnn._C: zoneout and recurrent dropout masks are not run "
                                            "for gru_reset_before");
    if (backward)
      return Kernels{FUSEDRNN_KERNEL_HANDLE(persistent_kernel<BwdResetPass<T>>),
                     {FUSEDRNN_KERNEL_HANDLE(bwd_reset_dh_step_kernel<T>),
                      FUSEDRNN_KERNEL_HANDLE(bwd_reset_r_step_kernel<T>)}};
    return Kernels{FUSEDRNN_KERNEL_HANDLE(persistent_kernel<FwdResetPass<T>>),
                   {FUSEDRNN_KERNEL_HANDLE(fwd_reset_gates_step_kernel<T>),
                    FUSEDRNN_KERNEL_HANDLE(fwd_reset_state_step_kernel<T>)}};
  } else {  // else: the one-stage passes would not compile for the two-stage cell
    if (masked && backward)
      return Kernels{FUSEDRNN_KERNEL_HANDLE(persistent_kernel<BwdRegPass<Cell, T>>),
                     {FUSEDRNN_KERNEL_HANDLE(bwd_step_kernel<BwdRegPass<Cell, T>>), nullptr}};
    if (masked)
      return Kernels{FUSEDRNN_KERNEL_HANDLE(persistent_kernel<FwdRegPass<Cell, T>>),
                     {FUSEDRNN_KERNEL_HANDLE(fwd_step_kernel<FwdRegPass<Cell, T>>), nullptr}};
    if (backward)
      return Kernels{FUSEDRNN_KERNEL_HANDLE(persistent_kernel<BwdPass<Cell, T>>),
                     {FUSEDRNN_KERNEL_HANDLE(bwd_step_kernel<BwdPass<Cell, T>>), nullptr}};
    return Kernels{FUSEDRNN_KERNEL_HANDLE(persistent_kernel<FwdPass<Cell, T>>),
                   {FUSEDRNN_KERNEL_HANDLE(fwd_step_kernel<FwdPass<Cell, T>>), nullptr}};
  }
}

template <class Cell, typename T>
std::string forward_typed(const ForwardArgs& a) {
  constexpr int G = Cell::G;
  const bool proj = a.w_hr != nullptr;
  FwdParams<T> p{a.T, a.B, a.H, a.P, a.reverse ? 1 : 0, a.D * G * a.H, a.D * a.P,
                 static_cast<const T*>(a.gx), static_cast<const T*>(a.h0), static_cast<const T*>(a.c0),
                 static_cast<const T*>(a.w), static_cast<const T*>(a.bias), static_cast<const T*>(a.w_hr),
                 a.lengths, static_cast<T*>(a.y), static_cast<T*>(a.hT), static_cast<T*>(a.cT), a.saved, a.m};
  p.zh = a.masks.zh; p.zc = a.masks.zc; p.dm = a.masks.dm;
  const DeviceLimits dev = device_limits(a.launch.device);
  const Kernels k = pass_kernels<Cell, T>(false, proj, a.masks.any());
  const std::string name = kernel_name<Cell, T>(proj ? "proj_fwd" : "fwd");
  const Plan plan = fitted_plan(cuda_runtime(), plan_request(false, a.cell, a.dtype, a.B, a.H, proj ? a.P : 0, a.D,
                                                             a.launch),
                                dev, k.persistent, a.launch.device, name);
  return launch_pass(p, plan, a.launch, dev, k, a.D, a.T, a.workspace, a.workspace_bytes, name);
}

template <class Cell, typename T>
std::string backward_typed(const BackwardArgs& a) {
  constexpr int G = Cell::G;
  const bool proj = a.wrt != nullptr;
  T* d_gx = static_cast<T*>(a.d_gx);
  BwdParams<T> p{a.T, a.B, a.H, a.P, a.reverse ? 1 : 0, a.D * G * a.H, a.D * a.P,
                 static_cast<const T*>(a.dy), static_cast<const T*>(a.dhT), static_cast<const T*>(a.dcT),
                 static_cast<const T*>(a.wt), static_cast<const T*>(a.wrt), a.lengths, a.saved, d_gx,
                 a.d_gh ? static_cast<T*>(a.d_gh) : d_gx, static_cast<T*>(a.dh0), static_cast<T*>(a.dc0), a.dh};
  p.zh = a.masks.zh; p.zc = a.masks.zc; p.dm = a.masks.dm;
  const DeviceLimits dev = device_limits(a.launch.device);
  const Kernels k = pass_kernels<Cell, T>(true, proj, a.masks.any());
  const std::string name = kernel_name<Cell, T>(proj ? "proj_bwd" : "bwd");
  const Plan plan = fitted_plan(cuda_runtime(), plan_request(true, a.cell, a.dtype, a.B, a.H, proj ? a.P : 0, a.D,
                                                             a.launch),
                                dev, k.persistent, a.launch.device, name);
  return launch_pass(p, plan, a.launch, dev, k, a.D, a.T + 1, a.workspace, a.workspace_bytes, name);
}

// plan_on_device for a request naming this cell (and its dtype): the plan the launch above makes.
template <class Cell, typename T>
Plan plan_typed(const PlanRequest& r, int device) {
  const DeviceLimits dev = device_limits(device);
  const Kernels k = pass_kernels<Cell, T>(r.backward, r.P > 0);
  const std::string name = kernel_name<Cell, T>(r.P > 0 ? (r.backward ? "proj_bwd" : "proj_fwd") : (r.backward ? "bwd" : "fwd"));
  return fitted_plan(cuda_runtime(), r, dev, k.persistent, device, name);
}
template <class Cell>
Plan plan_cell(const PlanRequest& r, int device) {
  switch ((DType)r.dtype) {
    case DType::F32: return plan_typed<Cell, float>(r, device);
    case DType::F16: return plan_typed<Cell, __half>(r, device);
    case DType::BF16: return plan_typed<Cell, __nv_bfloat16>(r, device);
    default: throw std::invalid_argument("fusedrnn._C: unsupported dtype");
  }
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

#include "cell_step_launch.cuh"

#define FUSEDRNN_INSTANTIATE_RECURRENCE(CELL)                          \
  namespace fusedrnn {                                                 \
  template std::string forward_cell<CELL>(const ForwardArgs&);         \
  template std::string backward_cell<CELL>(const BackwardArgs&);       \
  template Plan plan_cell<CELL>(const PlanRequest&, int);              \
  }

#define FUSEDRNN_INSTANTIATE(CELL)                                     \
  FUSEDRNN_INSTANTIATE_RECURRENCE(CELL)                                \
  namespace fusedrnn {                                                 \
  template std::string cell_step_cell<CELL>(const CellStepArgs&);      \
  }
