// GRU pointwise step, gate order r, z, n (torch.nn): n = tanh(gx_n + r * gh_n), where
// gh_n = W_hn h + b_hn stays separate from gx_n.
//   save[S]   r, z, n (activated), gh_n, h_prev, all fp32
#pragma once
#include "../cell_table.h"
#include "activations.h"

namespace fusedrnn {

struct GruCell {
  static constexpr CellInfo kInfo = cell_info(Cell::GRU);  // cell_table.h
  static constexpr int G = kInfo.gates, S = kInfo.saved;
  static constexpr const char* name = kInfo.name;
  static constexpr bool HAS_C = kInfo.has_c;

  FR_HD static void forward(const float* gx, const float* gh, float h_prev, float c_prev,
                            float* h, float* c, float* save) {
    (void)c_prev;
    const float r = sigmoidf_(gx[0] + gh[0]);
    const float z = sigmoidf_(gx[1] + gh[1]);
    const float n = tanhf_(gx[2] + r * gh[2]);
    *h = (1.0f - z) * n + z * h_prev;
    *c = 0.0f;
    save[0] = r; save[1] = z; save[2] = n; save[3] = gh[2]; save[4] = h_prev;
  }

  // d_gh differs from d_gx in the n gate only: d(gh_n) = r * d(gx_n).
  FR_HD static void backward(const float* save, float dh, float dc,
                             float* d_gx, float* d_gh, float* dh_local, float* dc_prev) {
    (void)dc;
    const float r = save[0], z = save[1], n = save[2], gh_n = save[3], h_prev = save[4];
    const float dn = dh * (1.0f - z) * (1.0f - n * n);
    const float dz = dh * (h_prev - n) * z * (1.0f - z);
    const float dr = dn * gh_n * r * (1.0f - r);
    d_gx[0] = dr; d_gx[1] = dz; d_gx[2] = dn;
    d_gh[0] = dr; d_gh[1] = dz; d_gh[2] = dn * r;
    *dh_local = dh * z;
    *dc_prev = 0.0f;
  }
};

}  // namespace fusedrnn
