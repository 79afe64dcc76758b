// C++ unit tests of the launch path (csrc/launch.cuh) against a recording fake of the CUDA
// runtime: no GPU needed. tests/test_cuda_launch.py runs each scenario (_selftest.launch) and
// reads the log.
#include <stdexcept>
#include <string>
#include <vector>

#include "launch.cuh"
#include "selftest.h"

namespace fusedrnn {

namespace {

class FakeRuntime final : public Runtime {
 public:
  std::vector<std::string> log;
  int current = 1;
  bool refuse_cooperative = false, refuse_cluster = false;
  char persistent_id = 0, step_id = 0;  // their addresses are the fake kernels

  std::string kernel(const void* k) const {
    return k == &persistent_id ? "persistent" : k == &step_id ? "step" : "?";
  }
  cudaError_t get_device(int* device) override {
    *device = current;
    log.push_back("get_device -> " + std::to_string(current));
    return cudaSuccess;
  }
  cudaError_t set_device(int device) override {
    current = device;
    log.push_back("set_device " + std::to_string(device));
    return cudaSuccess;
  }
  cudaError_t set_attribute(const void* k, cudaFuncAttribute attr, int value) override {
    const char* name = attr == cudaFuncAttributeMaxDynamicSharedMemorySize ? "max_dynamic_smem"
                       : attr == cudaFuncAttributeNonPortableClusterSizeAllowed ? "non_portable_cluster"
                                                                                 : "?";
    log.push_back("set_attribute " + kernel(k) + " " + name + " " + std::to_string(value));
    return cudaSuccess;
  }
  cudaError_t memset_async(void*, size_t bytes, cudaStream_t) override {
    log.push_back("memset " + std::to_string(bytes));
    return cudaSuccess;
  }
  cudaError_t launch(const void* k, int gx, int gy, int smem, int cluster, bool coop, cudaStream_t,
                     void**) override {
    log.push_back("launch " + kernel(k) + " grid=" + std::to_string(gx) + "x" + std::to_string(gy) +
                  " smem=" + std::to_string(smem) + " cluster=" + std::to_string(cluster) +
                  " cooperative=" + (coop ? "1" : "0") + " on device " + std::to_string(current));
    if ((coop && refuse_cooperative) || (cluster && refuse_cluster)) return cudaErrorCooperativeLaunchTooLarge;
    return cudaSuccess;
  }
  void clear_error() override { log.push_back("clear_error"); }
  int max_active_clusters(const void* k, int cluster, int smem) override {
    log.push_back("max_active_clusters " + kernel(k) + " cluster=" + std::to_string(cluster) +
                  " smem=" + std::to_string(smem));
    return 1;
  }
};

// One forward launch of an LSTM bf16 (B, H) through the real launch path.
// The device: the machine model's (an H100 SXM; model_limits, plan.h).
std::string launch_once(FakeRuntime& rt, int device, Mode mode, int B, int H, int T) {
  Launch l;
  l.device = device;
  l.mode = mode;
  const Plan plan = make_plan(plan_request(false, Cell::LSTM, DType::BF16, B, H, 0, 1, l), model_limits());
  rt.log.push_back(std::string("plan ") + tier_name(plan.tier));
  const Kernels k{&rt.persistent_id, {&rt.step_id, nullptr}};
  StepGeometry geo{};
  int s = 0, d = 0;
  return run(rt, plan, l, model_limits(), k, nullptr, nullptr, &geo, &s, &d, 1, T, nullptr, "lstm_fwd<bf16>");
}

}  // namespace

std::vector<std::string> launch_selftest(const std::string& name) {
  FakeRuntime rt;
  auto note = [&](const std::string& n) { rt.log.push_back("note: " + n); };
  try {
    if (name == "device_guard") {  // the caller's device 1 is current; the tensors live on device 0
      note(launch_once(rt, 0, Mode::AUTO, 8, 128, 3));
      rt.log.push_back("current " + std::to_string(rt.current));
      note(launch_once(rt, 1, Mode::AUTO, 8, 128, 3));  // already current: no set_device at all
      rt.log.push_back("current " + std::to_string(rt.current));
    } else if (name == "attribute_once") {  // two plans of different shared memory, same kernel
      note(launch_once(rt, 1, Mode::AUTO, 8, 128, 3));
      note(launch_once(rt, 1, Mode::AUTO, 1, 256, 3));
      note(launch_once(rt, 1, Mode::AUTO, 64, 1024, 3));
    } else if (name == "fallback_auto") {  // cooperative and cluster launches refused (MPS, busy SMs)
      rt.refuse_cooperative = rt.refuse_cluster = true;
      note(launch_once(rt, 1, Mode::AUTO, 16, 768, 3));
      note(launch_once(rt, 1, Mode::AUTO, 1, 256, 3));
    } else if (name == "fallback_forced") {
      rt.refuse_cooperative = true;
      note(launch_once(rt, 1, Mode::GRID, 16, 768, 3));
    } else {
      throw std::invalid_argument("unknown selftest '" + name + "'");
    }
  } catch (const std::runtime_error& e) {
    rt.log.push_back(std::string("error: ") + e.what());
  }
  return rt.log;
}

}  // namespace fusedrnn
