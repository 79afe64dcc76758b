// How a block's work is laid out; computed on the host (launch.cuh), read by the kernels.
//
// A block owns hidden units [j0, j0+U). Its weight slice has RPU rows per unit
// (forward: the G gate rows of W_hh, K = H; backward: one row of W_hhᵀ, K = G*H):
//   local row lr = g*U + u  (g < RPU, u < U)  <->  global row g*H + j0 + u, length K.
#pragma once

namespace fusedrnn {

struct Geometry {
  int K;      // reduction length: H forward, G*H backward
  int RPU;    // weight rows per hidden unit: G forward, 1 backward
  int U;      // hidden units per block
  int RP;     // weight rows per block, round_up(RPU*U, 8); rows past RPU*U are zero
  int ldw;    // row stride of the weight slice in shared memory: round_up(K, 16) + 8
  int BC;     // batch rows per chunk
  int BCP;    // rows of the per-chunk accumulator: round_up(BC, 16) with MMA, else BC
  int KS;     // split-K slices of the MMA path (1 for FMA)
  int stage;  // FMA: 1 if a chunk of the input vectors is staged in shared memory
  int off_w, off_x, off_part, smem;  // dynamic shared memory layout, bytes
};

}  // namespace fusedrnn
