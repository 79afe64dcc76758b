// Declarations of the per-cell entry points that csrc/kernels/<cell>.cu instantiate.
#pragma once
#include "api.h"

namespace fusedrnn {
template <class Cell> void forward_cell(const ForwardArgs& a);
template <class Cell> void backward_cell(const BackwardArgs& a);
template <class Cell> PlanInfo plan_cell(bool backward, DType dtype, int B, int H, int device, Mode mode);
}  // namespace fusedrnn
