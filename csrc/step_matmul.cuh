// The step matmul of a persistent CTA, on the tensor cores:
//   part[ks][n][row] (+)= Σ_{k in slice ks} A[row][k] · X[n][k - x0]
//
// for one stage S (layout.h):
//   A     (RP, Kp) the CTA's weight slice in smem, row stride lda (rows: gate-major units)
//   X     (BG, >= kt_end*KE - x0) the exchanged vector of the CTA's batch rows in smem, row stride
//         ldx, holding columns [x0, ...) (tier 3 streams K through it in passes)
//   part  (KS, BG, ldp) fp32 in smem; the pointwise sums the KS slices in order, so
//         results are bitwise reproducible (no atomics)
// M = weight rows (16-row m-tiles), N = batch rows (8-row n-tiles), K in 32-byte k-steps
// (16 bf16/fp16 or 8 fp32 values), k-steps [kt_begin, kt_end) split into KS slices; a
// later pass adds to part (the same warp owns the same entries in every pass, so the
// order of the sums is fixed). A warp item is WM m-tiles x WN n-tiles x one k-slice;
// fragments come from ldmatrix, whose byte addressing is the same for every dtype.
#pragma once
#include "device.cuh"

namespace fusedrnn {

template <typename T>
__device__ void step_matmul(const T* A, const T* X, int x0, float* part, const Stage& S, int BG, int kt_begin,
                            int kt_end, bool accumulate) {
  constexpr int KE = 32 / sizeof(T);  // elements per k-step
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int MT = S.RP / 16, NT = BG / 8, nk = kt_end - kt_begin;
  const int MG = ceil_div(MT, S.WM), NG = ceil_div(NT, S.WN), items = MG * NG * S.KS;
  for (int item = warp; item < items; item += kWarps) {
    const int ks = item % S.KS, rest = item / S.KS, mg = rest % MG, ng = rest / MG;
    const int k0 = kt_begin + ks * nk / S.KS, k1 = kt_begin + (ks + 1) * nk / S.KS;
    // ldmatrix row addresses: A x4 = rows 0-15 at k, rows 0-15 at k + 16 bytes;
    // X x2 = rows 0-7 at k, rows 0-7 at k + 16 bytes (lanes 16-31 mirror lanes 0-15)
    const T* pa[kWarpM];
    const T* pb[kWarpN];
#pragma unroll
    for (int i = 0; i < kWarpM; ++i) {
      const int mt = min(mg * S.WM + i, MT - 1);
      pa[i] = A + (size_t)(mt * 16 + (lane & 15)) * S.lda + (lane >> 4) * (KE / 2);
    }
#pragma unroll
    for (int j = 0; j < kWarpN; ++j) {
      const int nt = min(ng * S.WN + j, NT - 1);
      pb[j] = X + (size_t)(nt * 8 + (lane & 7)) * S.ldx + ((lane >> 3) & 1) * (KE / 2) - x0;
    }
    float acc[kWarpM][kWarpN][4];
#pragma unroll
    for (int i = 0; i < kWarpM; ++i)
#pragma unroll
      for (int j = 0; j < kWarpN; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
    for (int kt = k0; kt < k1; ++kt) {
      uint32_t a[kWarpM][4], b[kWarpN][2];
#pragma unroll
      for (int i = 0; i < kWarpM; ++i)
        if (i < S.WM) ldmatrix_x4(a[i], pa[i] + kt * KE);
#pragma unroll
      for (int j = 0; j < kWarpN; ++j)
        if (j < S.WN) ldmatrix_x2(b[j], pb[j] + kt * KE);
#pragma unroll
      for (int i = 0; i < kWarpM; ++i)
#pragma unroll
        for (int j = 0; j < kWarpN; ++j)
          if (i < S.WM && j < S.WN) MmaStep<T>::run(acc[i][j], a[i], b[j]);
    }
    // accumulator (row gid / gid+8, columns 2*tig, 2*tig+1) -> part[ks][n][row]
    const int gid = lane >> 2, tig = lane & 3;
#pragma unroll
    for (int i = 0; i < kWarpM; ++i)
#pragma unroll
      for (int j = 0; j < kWarpN; ++j) {
        const int mt = mg * S.WM + i, nt = ng * S.WN + j;
        if (i < S.WM && j < S.WN && mt < MT && nt < NT) {
          float* p = part + (size_t)(ks * BG + nt * 8 + 2 * tig) * S.ldp + mt * 16 + gid;
          if (accumulate) {
            p[0] += acc[i][j][0];
            p[S.ldp] += acc[i][j][1];
            p[8] += acc[i][j][2];
            p[S.ldp + 8] += acc[i][j][3];
          } else {
            p[0] = acc[i][j][0];
            p[S.ldp] = acc[i][j][1];
            p[8] = acc[i][j][2];
            p[S.ldp + 8] = acc[i][j][3];
          }
        }
      }
  }
}

// Σ over the KS split-K slices of part for (batch row n, weight row lr), in a fixed order.
// Unrolled up to kUnrolledSplitK slices, each behind a uniform test of the kernel parameter
// S.KS: a plan runs exactly its KS loads (one for KS = 1) and the compile gate's walk, told
// the plan's layout, reads just those (a runtime-count loop compiles to an unrolled body,
// a remainder loop and their guards, all of it on the walk). Plans past that count take the loop.
constexpr int kUnrolledSplitK = 8;
__device__ __forceinline__ float part_sum(const float* part, const Stage& S, int BG, int n, int lr) {
  const float* q = part + (size_t)n * S.ldp + lr;
  const size_t slice = (size_t)BG * S.ldp;
  float a = 0.0f + q[0];  // 0.0f + as before: a -0.0 slice sums to +0.0
#pragma unroll
  for (int ks = 1; ks < kUnrolledSplitK; ++ks) {
    if (ks >= S.KS) return a;
    a += q[ks * slice];
  }
  for (int ks = kUnrolledSplitK; ks < S.KS; ++ks) a += q[ks * slice];
  return a;
}

}  // namespace fusedrnn
