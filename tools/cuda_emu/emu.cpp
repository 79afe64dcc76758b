// The fiber scheduler and the CUDA runtime of the host build (emu.h says what it checks).
// Each CTA runs on an OS thread; the CTAs that may wait for each other (the grid of a
// cooperative launch, a cluster) run at the same time, and kPool such groups at a time.
// Inside a CTA, its 256 threads are ucontext fibers switched only at synchronisation points
// (barriers, warp collectives, spin waits), in the order FUSEDRNN_EMU_ORDER names.
#include "emu.h"

#include <sys/mman.h>
#include <ucontext.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "api.h"  // csrc/
#include "launch.cuh"  // csrc/
#include "layout.h"  // csrc/

namespace fusedrnn_emu {

namespace {

constexpr int kThreads = fusedrnn::kThreads;
constexpr int kWarps = kThreads / 32;
constexpr size_t kStackBytes = 128 * 1024;
constexpr int kGuardBytes = 256;  // after the dynamic shared memory: must stay untouched
constexpr unsigned char kGuard = 0xa5;
constexpr int kCanaryBytes = 256;  // at the low end of each fiber stack: must stay kGuard
constexpr int kPool = 4;
constexpr int kStaticSmemLimit = 48 * 1024;

struct Launch;
struct Block;

struct Copy {
  void* dst;
  const void* src;
};

struct Fiber {
  ucontext_t ctx;
  Block* blk = nullptr;
  uint3 tid{0, 0, 0};
  int lane = 0, warp = 0;
  bool done = false;
  std::vector<std::vector<Copy>> groups;  // committed cp.async groups, oldest first
  std::vector<Copy> open;                 // issued, not yet committed
  long long arrivals = 0, waits = 0;      // cluster barrier halves
  void* stack = nullptr;
};

struct WarpState {
  unsigned gen = 0, count = 0, alive = 32;
  const char* kind[32] = {};
  alignas(16) unsigned char slot[32 * 64];  // lane i's input at i * bytes
};

struct Block {
  Launch* launch = nullptr;
  uint3 idx{0, 0, 0};
  int linear = 0;
  unsigned char* smem = nullptr;  // dynamic shared memory, then kGuardBytes of guard
  int smem_bytes = 0;
  std::map<const void*, std::vector<unsigned char>> statics;
  std::vector<Fiber> fibers;
  ucontext_t sched;
  unsigned bar_gen = 0, bar_count = 0, alive = kThreads;
  WarpState warps[kWarps];
  int live = kThreads;
};

struct Cluster {
  std::atomic<long long> arrived{0};
};

struct Launch {
  Invoker invoker = nullptr;
  void** args = nullptr;
  dim3 grid, block{kThreads, 1, 1};
  int smem = 0, cluster = 0;
  std::vector<std::unique_ptr<Block>> blocks;
  std::vector<std::unique_ptr<Cluster>> clusters;
  std::atomic<bool> aborted{false};
  std::mutex mu;
  std::string error;
  std::chrono::steady_clock::time_point deadline;
  int order = 0;  // 0 forward, 1 reverse, 2 random
  unsigned seed = 0;
  int slow_cta = -1, slow_us = 0;  // FUSEDRNN_EMU_SLOW_CTA=cta:us, that CTA sleeps at each __syncthreads
};

thread_local Fiber* tl_fiber = nullptr;

Fiber& cur() {
  if (tl_fiber == nullptr) throw std::logic_error("fusedrnn emu: a device function ran outside a kernel");
  return *tl_fiber;
}

std::string vformat(const char* fmt, va_list ap) {
  char buf[1024];
  vsnprintf(buf, sizeof(buf), fmt, ap);
  return buf;
}

void record(Launch& l, const std::string& what) {
  std::lock_guard<std::mutex> lock(l.mu);
  if (l.error.empty()) l.error = what;
  l.aborted = true;
}

// Back to the CTA's scheduler; returns when the scheduler switches this fiber in again.
void yield() {
  Fiber& f = cur();
  swapcontext(&f.ctx, &f.blk->sched);
  tl_fiber = &f;
}

void release_block_barrier(Block& b) {
  b.bar_count = 0;
  ++b.bar_gen;
}

void release_warp_barrier(WarpState& w) {
  w.count = 0;
  ++w.gen;
}

void warp_barrier(const char* kind) {
  Fiber& f = cur();
  WarpState& w = f.blk->warps[f.warp];
  if (w.alive != 32) fail("warp %d: %s after some of its lanes exited", f.warp, kind);
  w.kind[f.lane] = kind;
  const unsigned gen = w.gen;
  if (++w.count == w.alive) {
    for (int i = 0; i < 32; ++i)
      if (std::strcmp(w.kind[i], kind) != 0)
        fail("warp %d diverged: lane %d is at %s while lane %d is at %s", f.warp, i, w.kind[i], f.lane, kind);
    release_warp_barrier(w);
    return;
  }
  while (w.gen == gen) yield();
}

void run_copies(std::vector<Copy>& g) {
  for (const Copy& c : g) std::memcpy(c.dst, c.src, 16);
}

void finish_fiber(Fiber& f) {
  Block& b = *f.blk;
  if (!f.open.empty() || !f.groups.empty())
    fail("thread %u ended with %zu cp.async copies not waited for", f.tid.x, f.open.size() + f.groups.size());
  f.done = true;
  --b.live;
  --b.alive;
  if (b.bar_count > 0 && b.bar_count == b.alive) release_block_barrier(b);
  WarpState& w = b.warps[f.warp];
  --w.alive;
  if (w.count > 0 && w.count == w.alive) release_warp_barrier(w);
}

void fiber_main() {
  Fiber* f = tl_fiber;
  f->blk->launch->invoker(f->blk->launch->args);
  finish_fiber(*f);
  swapcontext(&f->ctx, &f->blk->sched);  // never resumed
  std::abort();
}

void run_block(Block& b) {
  Launch& l = *b.launch;
  b.fibers = std::vector<Fiber>(kThreads);
  // one mapping for the CTA's stacks (a mapping per fiber would pass the kernel's map limit
  // on big grids); a canary at each stack's low end catches an overflow
  char* stacks = static_cast<char*>(
      mmap(nullptr, kStackBytes * kThreads, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (stacks == MAP_FAILED) {
    record(l, "cannot map the fiber stacks of CTA " + std::to_string(b.linear));
    return;
  }
  for (int t = 0; t < kThreads; ++t) {
    Fiber& f = b.fibers[t];
    f.blk = &b;
    f.tid = uint3{(unsigned)t, 0, 0};
    f.lane = t & 31;
    f.warp = t >> 5;
    f.stack = stacks + kStackBytes * t;
    std::memset(f.stack, kGuard, kCanaryBytes);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
  }
  std::vector<int> order(kThreads);
  for (int t = 0; t < kThreads; ++t) order[t] = l.order == 1 ? kThreads - 1 - t : t;
  std::mt19937 rng(l.seed * 7919u + (unsigned)b.linear);
  long long passes = 0;
  while (b.live > 0 && !l.aborted) {
    if (l.order == 2) std::shuffle(order.begin(), order.end(), rng);
    for (int t : order) {
      Fiber& f = b.fibers[t];
      if (f.done || l.aborted) continue;
      tl_fiber = &f;
      swapcontext(&b.sched, &f.ctx);
      tl_fiber = nullptr;
    }
    if ((++passes & 63) == 0 && std::chrono::steady_clock::now() > l.deadline)
      record(l, "CTA " + std::to_string(b.linear) + " still running at the deadline (FUSEDRNN_EMU_TIMEOUT): a hang");
    std::this_thread::yield();
  }
  for (const Fiber& f : b.fibers)
    for (int i = 0; i < kCanaryBytes; ++i)
      if (static_cast<unsigned char*>(f.stack)[i] != kGuard) {
        record(l, "a fiber of CTA " + std::to_string(b.linear) + " overflowed its stack");
        break;
      }
  munmap(stacks, kStackBytes * kThreads);
  for (int i = 0; i < kGuardBytes; ++i)
    if (b.smem[b.smem_bytes + i] != kGuard) {
      record(l, "CTA " + std::to_string(b.linear) + " wrote past its " + std::to_string(b.smem_bytes) +
                    " bytes of dynamic shared memory");
      break;
    }
}

std::mutex g_registry_mu;
std::unordered_map<const void*, Invoker>& registry() {
  static std::unordered_map<const void*, Invoker> r;
  return r;
}

double env_seconds(const char* name, double dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atof(v) : dflt;
}

}  // namespace

// ---- emu.h ----
const uint3& thread_idx() { return cur().tid; }
const uint3& block_idx() { return cur().blk->idx; }
const dim3& grid_dim() { return cur().blk->launch->grid; }
const dim3& block_dim() { return cur().blk->launch->block; }
int lane() { return cur().lane; }

void fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string what = vformat(fmt, ap);
  va_end(ap);
  Fiber& f = cur();
  record(*f.blk->launch, "CTA " + std::to_string(f.blk->linear) + " thread " + std::to_string(f.tid.x) + ": " + what);
  swapcontext(&f.ctx, &f.blk->sched);  // the launch is over: never resumed
  std::abort();
}

void syncthreads() {
  Block& b = *cur().blk;
  const unsigned gen = b.bar_gen;
  if (++b.bar_count == b.alive) {
    if (b.linear == b.launch->slow_cta) std::this_thread::sleep_for(std::chrono::microseconds(b.launch->slow_us));
    release_block_barrier(b);
    return;
  }
  while (b.bar_gen == gen) yield();
}

// A flag's release by the slow CTA: it sleeps as long again right after, so whatever it writes
// after the release (say an exchange round's values stored past its publish) lands that much
// later than the flag, and a consumer that trusts the flag reads the old values.
void after_release() {
  Block& b = *cur().blk;
  if (b.linear == b.launch->slow_cta) std::this_thread::sleep_for(std::chrono::microseconds(b.launch->slow_us));
}

void syncwarp() { warp_barrier("__syncwarp"); }

const unsigned char* exchange(const void* mine, int bytes, const char* kind) {
  Fiber& f = cur();
  WarpState& w = f.blk->warps[f.warp];
  if (bytes > 64) fail("%s: %d bytes per lane, more than the exchange holds", kind, bytes);
  std::memcpy(w.slot + (size_t)f.lane * bytes, mine, (size_t)bytes);
  warp_barrier(kind);  // the same kind on every lane, so the same size
  return w.slot;
}

void exchange_done() { warp_barrier("the end of a warp collective"); }

unsigned char* dynamic_smem() { return cur().blk->smem; }

void* static_shared(const void* key, size_t bytes) {
  Block& b = *cur().blk;
  std::vector<unsigned char>& v = b.statics[key];
  if (v.empty()) v.assign(bytes, 0xff);
  return v.data();
}

void check_smem16(const void* p, const char* what) {
  Block& b = *cur().blk;
  const unsigned char* q = static_cast<const unsigned char*>(p);
  if (q < b.smem || q + 16 > b.smem + b.smem_bytes)
    fail("%s %p lies outside the CTA's %d bytes of dynamic shared memory (offset %td)", what, p, b.smem_bytes,
         q - b.smem);
  if ((q - b.smem) % 16 != 0) fail("%s at shared offset %td is not 16-byte aligned", what, q - b.smem);
}

void cp_async16(void* dst, const void* src) {
  check_smem16(dst, "cp.async destination");
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0) fail("cp.async source %p is not 16-byte aligned", src);
  cur().open.push_back(Copy{dst, src});
}

void cp_async_commit() {
  Fiber& f = cur();
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}

void cp_async_wait(int n) {
  Fiber& f = cur();
  while ((int)f.groups.size() > n) {
    run_copies(f.groups.front());
    f.groups.erase(f.groups.begin());
  }
}

void cluster_arrive() {
  Fiber& f = cur();
  Launch& l = *f.blk->launch;
  if (l.cluster <= 0) fail("barrier.cluster.arrive in a launch without clusters");
  if (f.arrivals != f.waits) fail("barrier.cluster.arrive twice without a wait between");
  ++f.arrivals;
  l.clusters[f.blk->idx.x / l.cluster]->arrived.fetch_add(1, std::memory_order_acq_rel);
}

void cluster_wait() {
  Fiber& f = cur();
  Launch& l = *f.blk->launch;
  if (l.cluster <= 0) fail("barrier.cluster.wait in a launch without clusters");
  if (f.waits + 1 != f.arrivals) fail("barrier.cluster.wait without an arrive before it");
  ++f.waits;
  const long long want = f.arrivals * (long long)l.cluster * kThreads;
  Cluster& c = *l.clusters[f.blk->idx.x / l.cluster];
  while (c.arrived.load(std::memory_order_acquire) < want) yield();
}

uint32_t smem_addr(const void* p) {
  Block& b = *cur().blk;
  const unsigned char* q = static_cast<const unsigned char*>(p);
  if (q < b.smem || q >= b.smem + b.smem_bytes) fail("a shared-window address of %p, outside dynamic smem", p);
  return (uint32_t)(q - b.smem);
}

uint32_t map_rank(uint32_t addr, int rank) {
  Fiber& f = cur();
  Launch& l = *f.blk->launch;
  if (l.cluster <= 0) fail("mapa in a launch without clusters");
  if (rank < 0 || rank >= l.cluster) fail("mapa to rank %d of a cluster of %d", rank, l.cluster);
  if (addr >> 24) fail("mapa of an address already mapped");
  return addr | ((uint32_t)(rank + 1) << 24);
}

void st_cluster16(uint32_t addr, uint4 v) {
  Fiber& f = cur();
  Launch& l = *f.blk->launch;
  const int rank = (int)(addr >> 24) - 1;
  const uint32_t off = addr & 0xffffffu;
  if (rank < 0) fail("st.shared::cluster to an address mapa did not produce");
  if (off % 16) fail("st.shared::cluster.v4 at offset %u, not 16-byte aligned", off);
  const int target = (int)(f.blk->idx.x / l.cluster) * l.cluster + rank;
  Block& t = *l.blocks[target];
  if ((int)off + 16 > t.smem_bytes) fail("st.shared::cluster at offset %u past %d bytes", off, t.smem_bytes);
  std::memcpy(t.smem + off, &v, 16);
}

// A 1 MHz clock: emulated work is thousands of times slower than a GPU's, so a flag wait
// measured against the kernels' spin limit (cycles of a ~2 GHz clock) must tick slower too.
long long clock64() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void register_kernel(const void* key, Invoker invoker) {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  registry()[key] = invoker;
}

// ---- the runtime the launchers use ----
namespace {

class EmuRuntime final : public fusedrnn::Runtime {
 public:
  cudaError_t get_device(int* device) override {
    *device = 0;
    return cudaSuccess;
  }
  cudaError_t set_device(int device) override { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
  cudaError_t set_attribute(const void* kernel, cudaFuncAttribute attr, int value) override {
    std::lock_guard<std::mutex> lock(attr_mu_);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
      if (value > fusedrnn::device_limits(0).smem_optin) return cudaErrorInvalidValue;
      max_smem_[kernel] = value;
    } else if (attr == cudaFuncAttributeNonPortableClusterSizeAllowed) {
      non_portable_[kernel] = value != 0;
    }
    return cudaSuccess;
  }
  cudaError_t memset_async(void* p, size_t bytes, cudaStream_t) override {
    if (bytes) std::memset(p, 0, bytes);
    return cudaSuccess;
  }
  void clear_error() override {}
  // FUSEDRNN_EMU_MAX_CLUSTER (default 16): the largest cluster the emulated device holds for
  // any kernel, so tests can make 16-CTA clusters not fit (as registers or smem can on a GPU).
  int max_active_clusters(const void*, int cluster, int) override {
    return cluster <= max_cluster() ? fusedrnn::device_limits(0).sms / cluster : 0;
  }
  static int max_cluster() {
    const char* v = std::getenv("FUSEDRNN_EMU_MAX_CLUSTER");
    return v && *v ? std::atoi(v) : fusedrnn::machine::limits::max_cluster;
  }
  // FUSEDRNN_EMU_REFUSE=cooperative,cluster: the emulated device refuses those persistent
  // launches, as a GPU shared under MPS or with busy SMs may, so the AUTO fallback to the
  // per-step kernels runs its real path (the test hook; the production call has none).
  static bool refused(bool cooperative, int cluster) {
    const char* v = std::getenv("FUSEDRNN_EMU_REFUSE");
    const std::string what = v ? v : "";
    return (cooperative && what.find("cooperative") != std::string::npos) ||
           (cluster > 0 && what.find("cluster") != std::string::npos);
  }

  cudaError_t launch(const void* kernel, int grid_x, int grid_y, int smem, int cluster, bool cooperative,
                     cudaStream_t, void** args) override {
    Invoker inv;
    {
      std::lock_guard<std::mutex> lock(g_registry_mu);
      auto it = registry().find(kernel);
      if (it == registry().end()) throw std::logic_error("fusedrnn emu: launch of an unregistered kernel");
      inv = it->second;
    }
    int limit = kStaticSmemLimit;
    bool non_portable = false;
    {
      std::lock_guard<std::mutex> lock(attr_mu_);
      if (max_smem_.count(kernel)) limit = max_smem_[kernel];
      non_portable = non_portable_[kernel];
    }
    if (grid_x < 1 || grid_y < 1 || grid_y > 65535) return cudaErrorInvalidConfiguration;
    if (smem < 0 || smem > limit) return cudaErrorInvalidValue;
    namespace lim = fusedrnn::machine::limits;
    if (cluster > 0 &&
        (grid_x % cluster != 0 || cluster > (non_portable ? lim::max_cluster : lim::portable_cluster) ||
         cluster > max_cluster()))
      return cudaErrorInvalidClusterSize;
    if (refused(cooperative, cluster)) return cudaErrorCooperativeLaunchTooLarge;
    // one persistent CTA per SM (__launch_bounds__(256, 1): the registers of a whole SM)
    if (cooperative && grid_x * grid_y > fusedrnn::device_limits(0).sms) return cudaErrorCooperativeLaunchTooLarge;

    Launch l;
    l.invoker = inv;
    l.args = args;
    l.grid = dim3(grid_x, grid_y, 1);
    l.smem = smem;
    l.cluster = cluster;
    l.deadline = std::chrono::steady_clock::now() +
                 std::chrono::milliseconds((long long)(1000 * env_seconds("FUSEDRNN_EMU_TIMEOUT", 120)));
    const char* order = std::getenv("FUSEDRNN_EMU_ORDER");
    const std::string o = order ? order : "forward";
    l.order = o == "reverse" ? 1 : o.rfind("random", 0) == 0 ? 2 : 0;
    if (l.order == 2 && o.size() > 7) l.seed = (unsigned)std::atoi(o.c_str() + 7);  // random:SEED
    if (const char* slow = std::getenv("FUSEDRNN_EMU_SLOW_CTA")) {  // "cta:microseconds"
      if (const char* colon = std::strchr(slow, ':')) {
        l.slow_cta = std::atoi(slow);
        l.slow_us = std::atoi(colon + 1);
      }
    }
    const int n = grid_x * grid_y;
    std::vector<std::vector<unsigned char>> memory(n);
    for (int i = 0; i < n; ++i) {
      auto b = std::make_unique<Block>();
      b->launch = &l;
      b->linear = i;
      b->idx = uint3{(unsigned)(i % grid_x), (unsigned)(i / grid_x), 0};
      memory[i].assign((size_t)smem + kGuardBytes + 128, 0xff);
      unsigned char* base = memory[i].data();
      base += (128 - reinterpret_cast<uintptr_t>(base) % 128) % 128;  // __align__(128)
      std::memset(base + smem, kGuard, kGuardBytes);
      b->smem = base;
      b->smem_bytes = smem;
      l.blocks.push_back(std::move(b));
    }
    if (cluster > 0)
      for (int i = 0; i < grid_x / cluster; ++i) l.clusters.push_back(std::make_unique<Cluster>());
    // Groups of CTAs that must run at the same time: the whole grid of a cooperative launch,
    // each cluster of a cluster launch, else single CTAs; kPool groups at a time.
    const int group = cooperative ? n : cluster > 0 ? cluster : 1, groups = n / group;
    std::atomic<int> next{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < std::min(groups, kPool); ++w)
      workers.emplace_back([&] {
        for (int g = next++; g < groups && !l.aborted; g = next++) {
          std::vector<std::thread> ctas;
          for (int i = g * group + 1; i < (g + 1) * group; ++i) ctas.emplace_back([&l, i] { run_block(*l.blocks[i]); });
          run_block(*l.blocks[g * group]);
          for (auto& t : ctas) t.join();
        }
      });
    for (auto& t : workers) t.join();
    if (!l.error.empty()) throw std::runtime_error("fusedrnn emu: " + l.error);
    return cudaSuccess;
  }

 private:
  std::mutex attr_mu_;
  std::map<const void*, int> max_smem_;
  std::map<const void*, bool> non_portable_;
};

}  // namespace

}  // namespace fusedrnn_emu

namespace fusedrnn {

Runtime& cuda_runtime() {
  static fusedrnn_emu::EmuRuntime rt;
  return rt;
}

// The device the host build pretends to be: the machine model's (an H100 SXM; csrc/plan.cpp
// sizes tiers by it). FUSEDRNN_EMU_SMEM_OPTIN (bytes) shrinks its shared memory per CTA, so a
// test can make the plan take, at a small H, what it takes at a large one where smem is short.
DeviceLimits device_limits(int) {
  DeviceLimits d = model_limits();
  const char* v = std::getenv("FUSEDRNN_EMU_SMEM_OPTIN");
  if (v && *v) d.smem_optin = std::atoi(v);
  return d;
}

int device_count(std::string*) { return 1; }

}  // namespace fusedrnn
