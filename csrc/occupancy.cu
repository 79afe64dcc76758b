// The occupancy of one of this library's kernels as the GPU reports it, for the device
// check's calibration stage (tools/device_check/calibrate.py, through ctypes): a plain
// C function, because the CUDA runtime that registered the kernels is linked into this
// library alone. `kernel` is a kernel's host stub (its exported symbol).
#include <cuda_runtime.h>

#include "cluster_launch.cuh"
#include "layout.h"
#include "machine_model.h"

#if !defined(FUSEDRNN_EMULATE)  // the host build (tools/cuda_emu) has no occupancy to ask about
extern "C" __attribute__((visibility("default"))) int fusedrnn_max_active_clusters(const void* kernel, int cluster,
                                                                                  int smem, int* clusters,
                                                                                  int* registers) {
  cudaFuncAttributes attr;
  cudaError_t err = cudaFuncGetAttributes(&attr, kernel);
  if (err != cudaSuccess) return (int)err;
  *registers = attr.numRegs;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err == cudaSuccess && cluster > fusedrnn::machine::limits::portable_cluster)
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  if (err != cudaSuccess) return (int)err;
  cudaLaunchAttribute dims;
  const cudaLaunchConfig_t cfg = fusedrnn::cluster_launch_config(cluster, fusedrnn::kThreads, smem, &dims);
  return (int)cudaOccupancyMaxActiveClusters(clusters, kernel, &cfg);
}
#endif  // !FUSEDRNN_EMULATE
