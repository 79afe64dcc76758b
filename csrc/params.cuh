// The arguments of the recurrence kernels (persistent and per-step), both directions of a
// launch in one struct: `direction(d)` is the view of direction d (the pointers moved to
// its block, direction 1 reversed in time), computed where a kernel starts.
//
// Dimensions: T steps, B batch, H hidden, P the state fed back (proj_size, else H), G gates,
// S saved fp32 values per unit, D directions (1 or 2). Row strides: gx and its gradients
// (T, B, D*G*H) have ldg = D*G*H; y and dy (T, B, D*P) have ldy = D*P.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fusedrnn {

template <typename P>
__host__ __device__ __forceinline__ P* moved(P* ptr, size_t n) {
  return ptr != nullptr ? ptr + n : ptr;
}

template <typename T>
struct FwdParams {
  int steps, B, H, P, reverse;  // steps = T
  int ldg, ldy;
  const T* gx;             // (T, B, D*G*H) x W_ihᵀ + b_ih
  const T* h0;             // (D, B, P)
  const T* c0;             // (D, B, H) LSTM only, else null
  const T* w;              // (D, G*H, P) W_hh
  const T* bias;           // (D, G*H) b_hh or null
  const T* w_hr;           // (D, P, H) W_hr (projection) or null
  const int32_t* lengths;  // (B,) or null, shared by the directions
  T* y;                    // (T, B, D*P)
  T* hT;                   // (D, B, P)
  T* cT;                   // (D, B, H) LSTM only
  float* saved;            // (D, T, B, S, H) or null when no backward follows
  float* m;                // (D, T, B, H) o ⊙ tanh(c) with a projection and a backward, else null
  // zoneout and recurrent dropout (the regularised passes only; no projection, so P == H and a
  // mask row is ldy wide), each null when off: h_t = zh h_{t-1} + (1 - zh) h̃_t, c likewise,
  // and the recurrent product takes dm ⊙ h_{t-1}
  const float* zh;         // (T, B, D*P) fp32
  const float* zc;         // (T, B, D*H) fp32, LSTM only
  const float* dm;         // (D, B, P) fp32, already scaled by 1/(1-p)

  __host__ __device__ FwdParams direction(int d, int G, int S) const {
    FwdParams q = *this;
    const size_t BP = (size_t)B * P * d, BH = (size_t)B * H * d, GH = (size_t)G * H * d;
    q.reverse = d ? 1 : reverse;
    q.gx = moved(gx, GH);
    q.h0 = moved(h0, BP);
    q.c0 = moved(c0, BH);
    q.w = moved(w, GH * P);
    q.bias = moved(bias, GH);
    q.w_hr = moved(w_hr, (size_t)P * H * d);
    q.y = moved(y, (size_t)P * d);
    q.hT = moved(hT, BP);
    q.cT = moved(cT, BH);
    q.saved = moved(saved, (size_t)steps * S * BH);
    q.m = moved(m, (size_t)steps * BH);
    q.zh = moved(zh, (size_t)P * d);
    q.zc = moved(zc, (size_t)H * d);
    q.dm = moved(dm, BP);
    return q;
  }
};

template <typename T>
struct BwdParams {
  int steps, B, H, P, reverse;  // steps = T
  int ldg, ldy;
  const T* dy;             // (T, B, D*P)
  const T* dhT;            // (D, B, P)
  const T* dcT;            // (D, B, H) LSTM only
  const T* wt;             // (D, P, G*H) W_hhᵀ
  const T* wrt;            // (D, H, P) W_hrᵀ (projection) or null
  const int32_t* lengths;  // (B,) or null
  const float* saved;      // (D, T, B, S, H) from the forward
  T* d_gx;                 // (T, B, D*G*H)
  T* d_gh;                 // (T, B, D*G*H); == d_gx unless the cell's gradients differ (GRU)
  T* dh0;                  // (D, B, P)
  T* dc0;                  // (D, B, H) LSTM only
  float* dh;               // (D, T, B, P) projection: the gradient reaching h_t (0 at padded steps), else null
  const float* zh;         // the forward's masks (FwdParams), each null when off
  const float* zc;
  const float* dm;

  __host__ __device__ BwdParams direction(int d, int G, int S) const {
    BwdParams q = *this;
    const size_t BP = (size_t)B * P * d, BH = (size_t)B * H * d, GH = (size_t)G * H * d;
    q.reverse = d ? 1 : reverse;
    q.dy = moved(dy, (size_t)P * d);
    q.dhT = moved(dhT, BP);
    q.dcT = moved(dcT, BH);
    q.wt = moved(wt, GH * P);
    q.wrt = moved(wrt, (size_t)P * H * d);
    q.saved = moved(saved, (size_t)steps * S * BH);
    q.d_gx = moved(d_gx, GH);
    q.d_gh = moved(d_gh, GH);
    q.dh0 = moved(dh0, BP);
    q.dc0 = moved(dc0, BH);
    q.dh = moved(dh, (size_t)steps * BP);
    q.zh = moved(zh, (size_t)P * d);
    q.zc = moved(zc, (size_t)H * d);
    q.dm = moved(dm, BP);
    return q;
  }
};

}  // namespace fusedrnn
