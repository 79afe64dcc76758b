// How a recurrence runs on a device: a pure host function of the problem and of the
// device's limits (no CUDA call), so CPU tests and the compile gate ask it the very
// question the GPU path asks (launch.cuh reads the limits off the device, then calls it).
#pragma once
#include <functional>
#include <string>

#include "layout.h"
#include "machine_model.h"

namespace fusedrnn {

// auto: the fastest tier that fits, else per-step; persistent: the fastest of tiers 1-3 or
// an error; cta/cluster/grid/step: that tier or an error (tests force each one).
enum class Mode : int { AUTO = 0, PERSISTENT = 1, CTA = 2, CLUSTER = 3, GRID = 4, STEP = 5 };

struct DeviceLimits {
  int sms = 0;           // multiprocessors
  int smem_optin = 0;    // dynamic shared memory one CTA may opt in to (bytes)
  int smem_per_sm = 0;   // shared memory per multiprocessor (bytes)
  int regs_per_sm = 0;   // 32-bit registers per multiprocessor
  int cc_major = 0, cc_minor = 0;
  int max_cluster = 0;   // CTAs per cluster (16 non-portable on sm_90; 0: no clusters)
  int cooperative = 0;   // cooperative launches supported
};

// The default machine's limits (fusedrnn/machine.py LIMITS, generated into machine_model.h):
// what stands for a device where none is asked (the emulated device, the C++ self-tests).
inline DeviceLimits model_limits() {
  namespace m = machine::limits;
  DeviceLimits d;
  d.sms = m::sms; d.smem_optin = m::smem_optin; d.smem_per_sm = m::smem_per_sm; d.regs_per_sm = m::regs_per_sm;
  d.cc_major = m::cc_major; d.cc_minor = m::cc_minor; d.max_cluster = m::max_cluster; d.cooperative = m::cooperative;
  return d;
}

struct PlanRequest {
  bool backward = false;
  int G = 0, S = 0;      // gates, fp32 values saved per (t, b, unit): the cell's (cell_table.h, plan_request)
  int esize = 4;         // bytes per element of the dtype
  int B = 1, H = 1;
  int P = 0;             // proj_size (LSTM projection: the state fed back is P wide), 0: none
  bool reset_before = false;  // the GRU with its reset gate before the product: two stages a step
  int D = 1;             // directions run by one launch (independent CTA groups)
  Mode mode = Mode::AUTO;
  int units = 0;         // force U (units per CTA; rounded up to 16 bytes), 0: choose
  int batch_rows = 0;    // force BG (rows per group; rounded up to 8), 0: choose
  int passes = 0;        // force NP (grid tier: passes over K per step), 0: the fewest that fit
  int cell = -1, dtype = -1;  // api.h's Cell and DType: which kernel plan_on_device asks the device
                              // about (make_plan itself does not read them)
  machine::Constants model{};  // the cost model's constants: the H100 defaults, or a calibrated set
};

// The cost model's terms for one step, microseconds (see plan.cpp and benchmarks/NOTES.md).
struct Estimate {
  double sync = 0, exchange = 0, compute = 0, pointwise = 0, io = 0, step = 0;
  int waves = 1;
};

struct Plan {
  Tier tier = Tier::STEP;
  bool ok = true;        // false: the forced mode cannot run here (reason says why)
  Layout L{};            // tiers 1-3
  int grid = 0;          // CTAs of the persistent launch (NBG * NU)
  int cluster = 0;       // CTAs per cluster (tier 2), else 0
  bool cooperative = false;  // tier 3: launched cooperatively (co-residency is a launch error)
  StepGeometry step[kMaxStages]{};  // the per-step fallback, always filled (AUTO falls back to it):
  int nstep = 1;                    // one kernel per stage, launched in order each step
  // workspace (bytes, one buffer allocated by the caller):
  //   status | flags (D, NBG, NU) | xbuf (2, D*Bp, Kx) | hbuf (2, B, P) + mbuf (B, max(H, P)) | state (B, P + H) fp32
  long long ws_bytes = 0, off_flags = 0, off_xbuf = 0, off_hbuf = 0, off_mbuf = 0, off_state = 0;
  long long ws_zeroed = 0;   // bytes at the start the launcher zeroes before every launch
  Estimate est{};
  std::string reason;    // why this tier (for the fallback: why no persistent tier fits)
};

Plan make_plan(const PlanRequest& req, const DeviceLimits& dev);
// make_plan, then, while the plan's clusters do not fit the real kernel (active(cluster, smem):
// how many clusters of `cluster` CTAs with `smem` bytes of dynamic shared memory and the
// kernel's registers the device holds at once, cudaOccupancyMaxActiveClusters; 0: none, < 0:
// unknown, taken as fitting), plan again with smaller clusters: first at most 8 (the portable
// size), then one CTA fewer each time, down to no clusters (the grid tier or per-step kernels).
// The reason then says which cluster size did not fit and the limit planned with.
Plan make_plan_fitted(const PlanRequest& req, DeviceLimits dev, const std::function<int(int, int)>& active);
const char* tier_name(Tier t);
const char* mode_name(Mode m);

}  // namespace fusedrnn
