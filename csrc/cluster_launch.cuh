// A launch configuration with a 1-D cluster: the one the occupancy query asks about
// (occupancy.cu) and the calibration's cluster barrier launches (calibrate.cu).
#pragma once
#include <cuda_runtime.h>

namespace fusedrnn {

// `attr` must outlive the configuration (the configuration points at it).
inline cudaLaunchConfig_t cluster_launch_config(int cluster, int threads, int smem, cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(cluster, 1, 1);
  cfg.blockDim = dim3(threads, 1, 1);
  cfg.dynamicSmemBytes = smem;
  attr->id = cudaLaunchAttributeClusterDimension;
  attr->val.clusterDim.x = cluster;
  attr->val.clusterDim.y = 1;
  attr->val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

}  // namespace fusedrnn
