// The layout of one persistent launch: computed on the host by make_plan (plan.cpp),
// passed by value to the kernel (persistent.cuh), so host and device agree by construction.
//
// Dimensions: B batch, H hidden units, G gates, U units per CTA, NU CTAs per batch group
// (unit slices), Hp = U*NU (H padded), BG batch rows per group (multiple of 8), NBG
// groups, K the contraction (forward Hp: h; backward G*Hp: d_gh, column g*Hp + j),
// Kp = K padded to a 32-byte k-step, RP weight rows per CTA (multiple of 16).
// Plain C++: included by the host compiler (plan.cpp, binding) and by nvcc.
#pragma once

namespace fusedrnn {

constexpr int kThreads = 256;        // threads per CTA, every kernel
constexpr int kWarps = kThreads / 32;
constexpr int kPairsPerThread = 4;   // (unit, batch row) pairs of the pointwise per thread, at most
constexpr int kWarpM = 2;            // m-tiles (16 weight rows) per warp item, at most
constexpr int kWarpN = 4;            // n-tiles (8 batch rows) per warp item, at most
constexpr int kStatusWords = 16;     // the error word block at the start of the workspace
constexpr int kStaticSmemReserve = 1024;  // static smem of the persistent kernel: the plan leaves it free

// tiers of the persistent kernel (Mode and Tier share these numbers where they overlap)
enum class Tier : int { CTA = 1, CLUSTER = 2, GRID = 3, STEP = 4 };

struct Layout {
  int tier;          // Tier: 1 one CTA per group, 2 a cluster per group, 3 the grid (flags)
  int U, NU, Hp;     // units per CTA, CTAs per group, U*NU
  int BG, NBG, Bp;   // rows per group, groups, BG*NBG (rows of the global exchange buffer)
  int K, Kp;         // contraction and its padded length (elements)
  int RP;            // weight rows per CTA: round_up(rows_per_unit*U, 16), rows past that zero
  int lda, ldx;      // row strides (elements) of the weight slice and of the exchanged rows in smem
  int ldp;           // row stride (floats) of the partial sums part[ks][n][row]
  int KS, WM, WN;    // split-K slices; m-tiles and n-tiles per warp item
  int ppt;           // pointwise pairs per thread (<= kPairsPerThread)
  int nx;            // exchanged-row buffers in smem: 2 (tiers 1, 2: rounds s, s+1; tier 3 with NP > 1:
                     // passes p, p+1), else 1
  int NP, CPP;       // tier 3: passes per step over K, chunks (U columns of one producer) per pass;
                     // a pass copies its chunks while the matmul runs on the previous one
  int off_a, off_x, off_part, off_bias, off_stage, smem;  // dynamic shared memory (bytes)
};

// The per-step fallback: small CTAs over (units, batch rows), weights read from L2.
struct StepGeometry {
  int U;             // units per CTA (4)
  int RP;            // rows of the per-chunk partials: round_up(rows_per_unit*U, 8)
  int BC;            // batch rows per chunk
  int rows;          // batch rows per CTA (a multiple of BC so grid.y <= 65535)
  int grid_x, grid_y, smem;
};

}  // namespace fusedrnn
