// Declarations of the per-cell entry points that csrc/kernels/<cell>.cu instantiate.
#pragma once
#include <string>

#include "api.h"

namespace fusedrnn {
template <class Cell> std::string forward_cell(const ForwardArgs& a);
template <class Cell> std::string backward_cell(const BackwardArgs& a);
template <class Cell> std::string cell_step_cell(const CellStepArgs& a);
template <class Cell> Plan plan_cell(const PlanRequest& r, int device);  // plan_on_device for r.cell
}  // namespace fusedrnn
