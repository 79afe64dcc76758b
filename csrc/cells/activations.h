// Scalar activations shared by the cell headers; compile for host and device so the
// host compiler can test the exact same cell math (tests/test_cuda_cells.py).
// Accurate libm tanhf/expf on purpose: no --use_fast_math.
#pragma once
#include <math.h>

#if defined(__CUDACC__)
#define FR_HD __host__ __device__ __forceinline__
#else
#define FR_HD inline
#endif

namespace fusedrnn {

FR_HD float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
FR_HD float tanhf_(float x) { return tanhf(x); }

}  // namespace fusedrnn
