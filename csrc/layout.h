// The layout of one persistent launch: computed on the host by make_plan (plan.cpp),
// passed by value to the kernel (persistent.cuh), so host and device agree by construction.
//
// Dimensions: B batch, H hidden units, P the state fed back (proj_size, else H), G gates,
// D directions, U H-units per CTA, UP P-units per CTA (UP == U without a projection),
// NU CTAs per batch group (unit slices), Hp = U*NU, Pp = UP*NU (padded), BG batch rows per
// group (multiple of 8), NBG groups per direction, RP weight rows per CTA (multiple of 16, or of 8
// where the plan keeps a slice unpadded: step_matmul.cuh).
//
// A step is one or two stages. A stage is one matmul, part = A · Xᵀ, where A is the CTA's
// weight slice (kept in shared memory for the whole launch) and X the vector the CTAs of a
// batch group exchanged before it; then a pointwise part that produces the next X.
//   forward:                 gates = W_hh h          (X = h, P wide)  -> cell -> h (or m)
//   forward, projection:     + h = W_hr m            (X = m, H wide)  -> y, h
//   backward:                dh = W_hhᵀ d_gates      (X = d_gates, G*H wide) -> cell bwd -> d_gates
//   backward, projection:    dh = W_hhᵀ d_gates (P rows) -> dm = W_hrᵀ dh (X = dh, P wide) -> cell bwd
// X's columns come from the NU producers of the group: producer r contributes nseg segments
// of cw values each, segment g at column g*cw*NU + r*cw.
// Plain C++: included by the host compiler (plan.cpp, binding) and by nvcc.
#pragma once
#include <cstddef>

namespace fusedrnn {

constexpr int kThreads = 256;        // threads per CTA, every kernel
constexpr int kWarps = kThreads / 32;
constexpr int kPairsPerThread = 4;   // (unit, batch row) pairs of a pointwise per thread, at most
constexpr int kWarpM = 2;            // m-tiles (16 weight rows) per warp item, at most
constexpr int kWarpN = 4;            // n-tiles (8 batch rows) per warp item, at most
constexpr int kStatusWords = 16;     // the error word block at the start of the workspace
constexpr int kStaticSmemReserve = 1024;  // static smem of the persistent kernel: the plan leaves it free
constexpr int kMaxStages = 2;
constexpr int kMaxGridProducers = 160;  // grid tier: CTAs per batch group (NU), 5 flag polls per lane

// tiers of the persistent kernel (Mode and Tier share these numbers where they overlap)
enum class Tier : int { CTA = 1, CLUSTER = 2, GRID = 3, STEP = 4 };

struct Stage {
  int cw, nseg;      // the consumed X: values per producer and segment, segments per producer
  int rows;          // output units per CTA of this stage (U or UP); A's rows: rows_per_unit * rows
  int K, Kp;         // contraction nseg*cw*NU and its padded length (a 32-byte k-step multiple)
  int RP;            // weight rows per CTA, multiple of 16 (or 8: plan.cpp); rows past the real ones are zero
  int lda, ldx;      // row strides (elements) of the weight slice and of X in smem
  int ldp;           // row stride (floats) of the partial sums part[ks][n][row]
  int KS, WM, WN;    // split-K slices; m-tiles and n-tiles per warp item
  int ppt;           // pointwise pairs (unit, batch row) per thread (<= kPairsPerThread)
  int nx;            // X buffers in smem: 2 (one stage per step on tiers 1, 2: rounds r, r+1;
                     // tier 3 with NP > 1: passes p, p+1), else 1
  int NP, CPP;       // tier 3: passes over K per step, chunks (cw columns of one producer) per pass;
                     // a pass copies its chunks while the matmul runs on the previous one
  int off_a, off_x;  // dynamic shared memory (bytes) of A and X
  int off_out;       // tier 2: this stage's X as it leaves the CTA, (nseg, BG, cw), at off_stage + off_out;
                     // one per stage, so each keeps zeros where the other stage's layout has values
};

struct Layout {
  int tier;          // Tier: 1 one CTA per group, 2 a cluster per group, 3 the grid (flags)
  int U, UP, NU, Hp, Pp;
  int BG, NBG, Bp;   // rows per group, groups per direction, BG*NBG
  int D;             // directions: CTAs [d*NBG*NU, (d+1)*NBG*NU) run direction d
  int nst;           // stages per step (1, or 2 with a projection)
  int Kx;            // tier 3: row stride (elements) of the global exchange buffer, max Kp
  Stage st[kMaxStages];
  int off_bias, off_stage, off_part, smem;  // dynamic shared memory (bytes): bias (fp32, stage 0
                                            // forward), tier 2's outgoing slices, partial sums
};

// The compile gate's critical-path walk (tools/compile_check/cuda_walks.py) reads a plan's
// branch fields (tier, each stage's KS, WM, WN, ppt, NP, ...) as kernel parameters at byte
// offsets it derives from the declaration order of Layout and Stage, every field an int:
// keep LAYOUT_FIELDS and STAGE_FIELDS there in step with these structs.
static_assert(offsetof(Layout, st) == 12 * sizeof(int) && sizeof(Stage) == 19 * sizeof(int) &&
                  offsetof(Stage, KS) == 9 * sizeof(int) && offsetof(Stage, ppt) == 12 * sizeof(int) &&
                  offsetof(Stage, NP) == 14 * sizeof(int) && offsetof(Layout, tier) == 0,
              "Layout moved: update LAYOUT_FIELDS / STAGE_FIELDS in tools/compile_check/cuda_walks.py");

// The per-step fallback: small CTAs over (units, batch rows), weights read from L2; one
// launch per stage and step, the directions one after the other.
struct StepGeometry {
  int U;             // units per CTA (4)
  int RP;            // rows of the per-chunk partials: round_up(rows_per_unit*U, 8)
  int BC;            // batch rows per chunk
  int rows;          // batch rows per CTA (a multiple of BC so grid.y <= 65535)
  int grid_x, grid_y, smem;
};

}  // namespace fusedrnn
