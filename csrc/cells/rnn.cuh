// Vanilla RNN pointwise step: h = tanh(a) or relu(a), a = gx + gh.
//   save[S]   h (activated, fp32)
#pragma once
#include "../cell_table.h"
#include "activations.h"

namespace fusedrnn {

template <bool RELU>
struct RnnCell {
  static constexpr CellInfo kInfo = cell_info(RELU ? Cell::RNN_RELU : Cell::RNN_TANH);  // cell_table.h
  static constexpr int G = kInfo.gates, S = kInfo.saved;
  static constexpr const char* name = kInfo.name;
  static constexpr bool HAS_C = kInfo.has_c;

  FR_HD static void forward(const float* gx, const float* gh, float h_prev, float c_prev,
                            float* h, float* c, float* save) {
    (void)h_prev; (void)c_prev;
    const float a = gx[0] + gh[0];
    const float hn = RELU ? (a < 0.0f ? 0.0f : a) : tanhf_(a);  // NaN passes through, as torch.relu
    *h = hn;
    *c = 0.0f;
    save[0] = hn;
  }

  // relu'(a) is 0 at a <= 0 and 1 elsewhere, NaN included (torch's threshold_backward:
  // h <= 0 ? 0 : dh); h <= 0 exactly when a <= 0.
  FR_HD static void backward(const float* save, float dh, float dc,
                             float* d_gx, float* d_gh, float* dh_local, float* dc_prev) {
    (void)dc;
    const float hn = save[0];
    d_gx[0] = RELU ? (hn <= 0.0f ? 0.0f : dh) : dh * (1.0f - hn * hn);
    d_gh[0] = d_gx[0];
    *dh_local = 0.0f;
    *dc_prev = 0.0f;
  }
};

using RnnTanhCell = RnnCell<false>;
using RnnReluCell = RnnCell<true>;

}  // namespace fusedrnn
