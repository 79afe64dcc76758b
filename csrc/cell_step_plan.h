// The geometry of the fused decode step (cell_step.cuh): a pure host function of the
// problem and the device's limits, pinned by CPU tests like the recurrence's plan.
//
// Dimensions: B batch, I input size, H hidden units, G gates. The step reads W_ih (G*H, I)
// and W_hh (G*H, H) once each: it is bound by the weights' bytes, so the geometry spreads
// the G*H rows over every SM with 16-byte loads.
#pragma once
#include "plan.h"

namespace fusedrnn {

struct CellStepRequest {
  int G = 0, esize = 4, B = 1, I = 1, H = 1;  // G: the cell's gates (cell_table.h), set by the caller
};

struct CellStepPlan {
  int UB = 1;        // hidden units per CTA (all G gate rows of each: the pointwise needs no exchange)
  int KW = 8;        // warps per unit (kWarps / UB): the unit's K = I + H split between them
  int NB = 1;        // batch rows per CTA (1 or 8; the kernel's template argument)
  int grid_x = 1, grid_y = 1;
  double weight_mb = 0, est_us = 0;  // the cost model: the weights' bytes at HBM bandwidth, x/h re-reads from L2
  std::string reason;
};

CellStepPlan make_cell_step_plan(const CellStepRequest& r, const DeviceLimits& dev);

}  // namespace fusedrnn
