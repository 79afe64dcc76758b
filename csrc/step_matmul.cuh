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

// The 16-row m-tiles over a stage's RP weight rows. RP is a multiple of 8: where it is not one
// of 16 (a slice the plan keeps unpadded, plan.cpp: padded, it would not fit in shared memory),
// the last m-tile's rows 8-15 read rows 0-7 of that tile again (ldmatrix has to read some
// row); their sums land in part rows >= RP, which no pointwise reads.
__device__ __forceinline__ int m_tiles(const Stage& S) { return ceil_div(S.RP, 16); }
__device__ __forceinline__ int a_row(const Stage& S, int row) { return row < S.RP ? row : row - 8; }

// How a stage's warp items split (item -> split-K slice ks, m-group mg, n-group ng), made
// once before the step loop: the step divides by multiply-high and shift (FastDiv) instead of
// dividing by layout fields, some 20 instructions per runtime division, five per item.
struct MatmulSplit {
  FastDiv ks, mg;  // by S.KS, by the m-groups MG
  int items;       // MG * NG * KS
  __device__ static MatmulSplit of(const Stage& S, int BG) {
    const int KS = max(S.KS, 1), MG = ceil_div(m_tiles(S), max(S.WM, 1)), NG = ceil_div(BG / 8, max(S.WN, 1));
    return MatmulSplit{FastDiv::of(KS), FastDiv::of(max(MG, 1)), MG * NG * KS};
  }
};

// The warp items of one warp tile shape WM x WN (m-tiles x n-tiles), fixed at compile time:
// exactly WM ldmatrix_x4, WN ldmatrix_x2 and WM*WN mma per k-step, no guards (a tile shape
// read from the layout at run time issues, predicated off, the largest shape's work).
// WNC: the n-tiles one sweep over K accumulates (WN in WN / WNC sweeps, each over the item's
// k-steps): fp32's 2x4 tile, every fragment split in three (3xTF32), would not fit in registers.
template <typename T, int WM, int WN, int WNC = WN>
__device__ __forceinline__ void matmul_items(const T* A, const T* X, int x0, float* part, const Stage& S,
                                             const MatmulSplit& sp, int BG, int kt_begin, int kt_end,
                                             bool accumulate) {
  constexpr int KE = 32 / sizeof(T);  // elements per k-step
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int MT = m_tiles(S), NT = BG / 8, nk = kt_end - kt_begin;
  for (int item = warp; item < sp.items; item += kWarps) {
    const int rest = sp.ks.div(item), ks = sp.ks.mod(item, rest), ng = sp.mg.div(rest), mg = sp.mg.mod(rest, ng);
    const int k0 = kt_begin + sp.ks.div(ks * nk), k1 = kt_begin + sp.ks.div((ks + 1) * nk);
    // ldmatrix row addresses: A x4 = rows 0-15 at k, rows 0-15 at k + 16 bytes;
    // X x2 = rows 0-7 at k, rows 0-7 at k + 16 bytes (lanes 16-31 mirror lanes 0-15)
    const T* pa[WM];
#pragma unroll
    for (int i = 0; i < WM; ++i) {
      const int mt = min(mg * WM + i, MT - 1);
      pa[i] = A + a_row(S, mt * 16 + (lane & 15)) * S.lda + (lane >> 4) * (KE / 2);
    }
#pragma unroll
    for (int j0 = 0; j0 < WN; j0 += WNC) {
      const T* pb[WNC];
#pragma unroll
      for (int j = 0; j < WNC; ++j) {
        const int nt = min(ng * WN + j0 + j, NT - 1);
        pb[j] = X + (nt * 8 + (lane & 7)) * S.ldx + ((lane >> 3) & 1) * (KE / 2) - x0;
      }
      float acc[WM][WNC][4];
#pragma unroll
      for (int i = 0; i < WM; ++i)
#pragma unroll
        for (int j = 0; j < WNC; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
      for (int kt = k0; kt < k1; ++kt) {
        uint32_t a[WM][4], b[WNC][2];
#pragma unroll
        for (int i = 0; i < WM; ++i) ldmatrix_x4(a[i], pa[i] + kt * KE);
#pragma unroll
        for (int j = 0; j < WNC; ++j) ldmatrix_x2(b[j], pb[j] + kt * KE);
#pragma unroll
        for (int i = 0; i < WM; ++i)
#pragma unroll
          for (int j = 0; j < WNC; ++j) MmaStep<T>::run(acc[i][j], a[i], b[j]);
      }
      // accumulator (row gid / gid+8, columns 2*tig, 2*tig+1) -> part[ks][n][row]
      const int gid = lane >> 2, tig = lane & 3;
#pragma unroll
      for (int i = 0; i < WM; ++i)
#pragma unroll
        for (int j = 0; j < WNC; ++j) {
          const int mt = mg * WM + i, nt = ng * WN + j0 + j;
          if (mt < MT && nt < NT) {
            float* p = part + (ks * BG + nt * 8 + 2 * tig) * S.ldp + mt * 16 + gid;
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
    }  // j0
  }
}

// The step matmul: one branch per call on the plan's warp tile (S.WM in 1..kWarpM, S.WN in
// {1, 2, 4}; plan.cpp's best_split), a test of kernel parameters, uniform across the CTA and
// resolved by the compile gate's walk, which is told WM and WN.
template <typename T>
__device__ void step_matmul(const T* A, const T* X, int x0, float* part, const Stage& S, const MatmulSplit& sp,
                            int BG, int kt_begin, int kt_end, bool accumulate) {
  static_assert(kWarpM == 2 && kWarpN == 4, "step_matmul instantiates WM 1..2 x WN 1, 2, 4");
  // fp32 sweeps the n-tiles of its wider tiles in parts (1x4: 2 + 2; 2x2, 2x4: one at a time):
  // 3xTF32 keeps three copies of every fragment, and a whole 2x4 tile spilled
  constexpr bool kF32 = sizeof(T) == 4;
  if (S.WM == 1) {
    if (S.WN == 1) return matmul_items<T, 1, 1>(A, X, x0, part, S, sp, BG, kt_begin, kt_end, accumulate);
    if (S.WN == 2) return matmul_items<T, 1, 2>(A, X, x0, part, S, sp, BG, kt_begin, kt_end, accumulate);
    return matmul_items<T, 1, 4, kF32 ? 2 : 4>(A, X, x0, part, S, sp, BG, kt_begin, kt_end, accumulate);
  }
  if (S.WN == 1) return matmul_items<T, 2, 1>(A, X, x0, part, S, sp, BG, kt_begin, kt_end, accumulate);
  if (S.WN == 2) return matmul_items<T, 2, 2, kF32 ? 1 : 2>(A, X, x0, part, S, sp, BG, kt_begin, kt_end, accumulate);
  return matmul_items<T, 2, 4, kF32 ? 1 : 4>(A, X, x0, part, S, sp, BG, kt_begin, kt_end, accumulate);
}

// Σ over the KS split-K slices of part for (batch row n, weight row lr), in a fixed order.
// Unrolled up to kUnrolledSplitK slices, each behind a uniform test of the kernel parameter
// S.KS: a plan runs exactly its KS loads (one for KS = 1) and the compile gate's walk, told
// the plan's layout, reads just those (a runtime-count loop compiles to an unrolled body,
// a remainder loop and their guards, all of it on the walk). Plans past that count take the loop.
constexpr int kUnrolledSplitK = 8;
__device__ __forceinline__ float part_sum(const float* part, const Stage& S, int BG, int n, int lr) {
  const float* q = part + n * S.ldp + lr;  // smem offsets: ints
  const int slice = BG * S.ldp;
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
