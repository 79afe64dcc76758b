// GRU with the reset gate before the recurrent product (fusedrnn.GRU(reset_after=False)),
// gate order r, z, n:
//   r = σ(gx_r + W_hr h + b_hr), z = σ(gx_z + W_hz h + b_hz)          (phase 1: W_hh's r, z rows · h)
//   n = tanh(gx_n + W_hn (r ⊙ h) + b_hn), h' = (1 − z) n + z h        (phase 2: W_hn · (r ⊙ h))
// The second product depends on the first, so a step is two stages (passes_reset.cuh).
//   save[S]   r, z, n (activated), h_prev, all fp32
// The pre-activation gradients are the same for gx and for the recurrent products (every gate
// adds its product, b_hh included), so d_gh == d_gx; dW_hn pairs d(n_pre) with r ⊙ h
// (fusedrnn/ops/common.py recurrent_weight_grads).
#pragma once
#include "../cell_table.h"
#include "activations.h"

namespace fusedrnn {

struct GruResetBeforeCell {
  static constexpr CellInfo kInfo = cell_info(Cell::GRU_RESET_BEFORE);  // cell_table.h
  static constexpr int G = kInfo.gates, S = kInfo.saved;
  static constexpr const char* name = kInfo.name;
  static constexpr bool HAS_C = kInfo.has_c;
  enum Slot { kR = 0, kZ = 1, kN = 2, kHPrev = 3 };

  // Forward phase 1: r and z from their pre-activations (gx + the product + b_hh), and the
  // operand of the second product, r ⊙ h_prev.
  FR_HD static float gates(float pre_r, float pre_z, float h_prev, float* r, float* z) {
    *r = sigmoidf_(pre_r);
    *z = sigmoidf_(pre_z);
    return *r * h_prev;
  }
  // Forward phase 2: n from gx_n + W_hn (r ⊙ h) + b_hn, and the new state.
  FR_HD static float state(float pre_n, float z, float h_prev, float* n) {
    *n = tanhf_(pre_n);
    return (1.0f - z) * *n + z * h_prev;
  }

  // Backward phase 1, from dh (everything reaching h_t): d(n_pre) and d(z_pre).
  FR_HD static void grad_nz(const float* save, float dh, float* dn_pre, float* dz_pre) {
    const float z = save[kZ], n = save[kN], h_prev = save[kHPrev];
    *dn_pre = dh * (1.0f - z) * (1.0f - n * n);
    *dz_pre = dh * (h_prev - n) * z * (1.0f - z);
  }
  // Backward phase 2, from drh = W_hnᵀ d(n_pre) (the gradient of r ⊙ h_prev): d(r_pre), and
  // the part of dL/dh_{t-1} not coming through W_hr, W_hz (returned).
  FR_HD static float grad_r(const float* save, float dh, float drh, float* dr_pre) {
    const float r = save[kR], z = save[kZ], h_prev = save[kHPrev];
    *dr_pre = drh * h_prev * r * (1.0f - r);
    return dh * z + drh * r;
  }
};

}  // namespace fusedrnn
