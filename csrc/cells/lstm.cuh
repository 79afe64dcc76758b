// LSTM pointwise step, gate order i, f, g, o (torch.nn).
//   gx[G], gh[G]   pre-activations from x W_ihᵀ + b_ih and from h W_hhᵀ + b_hh
//   save[S]        i, f, g, o (activated) and c_prev, all fp32
#pragma once
#include "../cell_table.h"
#include "activations.h"

namespace fusedrnn {

struct LstmCell {
  static constexpr CellInfo kInfo = cell_info(Cell::LSTM);  // cell_table.h
  static constexpr int G = kInfo.gates, S = kInfo.saved;
  static constexpr const char* name = kInfo.name;
  static constexpr bool HAS_C = kInfo.has_c;

  FR_HD static void forward(const float* gx, const float* gh, float h_prev, float c_prev,
                            float* h, float* c, float* save) {
    (void)h_prev;
    const float i = sigmoidf_(gx[0] + gh[0]);
    const float f = sigmoidf_(gx[1] + gh[1]);
    const float g = tanhf_(gx[2] + gh[2]);
    const float o = sigmoidf_(gx[3] + gh[3]);
    const float c_new = f * c_prev + i * g;
    *c = c_new;
    *h = o * tanhf_(c_new);
    save[0] = i; save[1] = f; save[2] = g; save[3] = o; save[4] = c_prev;
  }

  // dh, dc: gradient reaching h_t and c_t. Outputs: pre-activation grads (d_gx == d_gh
  // for LSTM), the part of dL/dh_{t-1} not coming through W_hh (zero) and dL/dc_{t-1}.
  FR_HD static void backward(const float* save, float dh, float dc,
                             float* d_gx, float* d_gh, float* dh_local, float* dc_prev) {
    const float i = save[0], f = save[1], g = save[2], o = save[3], c_prev = save[4];
    const float tc = tanhf_(f * c_prev + i * g);
    const float dct = dc + dh * o * (1.0f - tc * tc);
    d_gx[0] = dct * g * i * (1.0f - i);
    d_gx[1] = dct * c_prev * f * (1.0f - f);
    d_gx[2] = dct * i * (1.0f - g * g);
    d_gx[3] = dh * tc * o * (1.0f - o);
    for (int k = 0; k < G; ++k) d_gh[k] = d_gx[k];
    *dh_local = 0.0f;
    *dc_prev = dct * f;
  }
};

}  // namespace fusedrnn
