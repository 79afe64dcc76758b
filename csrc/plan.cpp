// make_plan: the tier, layout and workspace of one recurrence launch (see plan.h).
//
// Search: every units-per-CTA U (16-byte multiples; NU = ceil(H/U) CTAs per batch group),
// every batch-group size BG (multiples of 8), every tier that can hold that slice, and the
// warp split (KS, WM, WN) of the step matmul; keep the one the cost model says is fastest.
// The model (one table below) is also what benchmarks/NOTES.md predicts from.
#include "plan.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>
#include <vector>

namespace fusedrnn {

namespace {

long long cdiv(long long a, long long b) { return (a + b - 1) / b; }
long long rup(long long a, long long b) { return cdiv(a, b) * b; }

// The cost model's constants: H100 SXM figures (measured ones from ANCHORS, the rest
// assumed and marked so); per SM unless said otherwise.
struct Model {
  double clk_per_us = 1750;          // SM clock under load, cycles per microsecond
  double smem_bytes_per_clk = 128;   // shared-memory bandwidth
  double l2_bytes_per_clk = 64;      // one SM's share of L2 reads (assumed)
  double l2_total_bytes_per_us = 5.5e6;   // all SMs together (assumed 5.5 TB/s)
  double hbm_bytes_per_us = 3.0e6;        // 3.0 TB/s
  double dsmem_bytes_per_clk = 32;   // stores into other CTAs' shared memory (assumed)
  double cta_sync_us = 0.03;         // the __syncthreads of one step
  double cluster_barrier_us = 0.30;  // barrier.cluster arrive + wait (assumed, unmeasured)
  double flag_exchange_us = 0.80;    // release store -> L2 -> acquire poll -> copy issued (assumed;
                                     // the measured cooperative grid barrier is 1.12)
  double pointwise_clk = 250;        // the cell's expf/tanhf chain and its stores, per pair round
  double kstep_latency_clk = 24;     // one dependent ldmatrix + mma k-step of a warp
  double launch_us = 3.9;            // one kernel launch (measured), the per-step fallback's floor
  double fma_per_clk = 128;          // fp32 FMA units (the per-step kernel's matmul)
};
constexpr Model kModel{};

struct Split {
  int KS = 0, WM = 0, WN = 0;
  double cycles = 0;
};

// The warp split of the step matmul (MT m-tiles x NT n-tiles x nk k-steps of 32 bytes)
// with the fewest modelled cycles whose partial sums fit in part_budget bytes.
Split best_split(int MT, int NT, int nk, int esize, int BG, int ldp, long long part_budget) {
  const double c_mma = esize == 2 ? 2.0 : 6.0;   // SM cycles per m16n8 tile-step (fp32: 3 tf32 mma)
  const double issue = esize == 2 ? 8.0 : 24.0;  // cycles one warp needs to issue a tile-step
  Split best;
  for (int WM = 1; WM <= kWarpM; ++WM) {
    if (WM > 1 && MT < WM) continue;
    for (int WN : {1, 2, 4}) {
      if (WN > kWarpN || (WN > 1 && NT < WN)) continue;
      for (int KS : {1, 2, 3, 4, 6, 8}) {
        if (KS > nk) continue;
        if ((long long)KS * BG * ldp * 4 > part_budget) continue;
        const long long MG = cdiv(MT, WM), NG = cdiv(NT, WN), items = MG * NG * KS;
        const double rounds = (double)cdiv(items, kWarps), kper = (double)cdiv(nk, KS);
        const double chain = rounds * kper * std::max(kModel.kstep_latency_clk, WM * WN * issue);
        const double bytes = (double)nk * (512.0 * MT * NG + 256.0 * NT * MG);  // ldmatrix traffic
        const double bw = bytes / kModel.smem_bytes_per_clk;
        const double total = (double)MT * NT * nk * c_mma;
        const double reduce = KS > 1 ? 40.0 * KS : 0.0;
        const double cycles = std::max(chain, std::max(bw, total)) + reduce;
        if (best.KS == 0 || cycles < best.cycles - 1e-9) best = Split{KS, WM, WN, cycles};
      }
    }
  }
  return best;
}

StepGeometry step_geometry(int RPU, int B, int H) {
  StepGeometry s{};
  s.U = 4;
  s.RP = (int)rup((long long)RPU * s.U, 8);
  s.BC = std::min(B, 32);
  const long long chunks = cdiv(B, s.BC), per_block = cdiv(chunks, 65535);
  s.rows = (int)(per_block * s.BC);
  s.grid_x = (int)cdiv(H, s.U);
  s.grid_y = (int)cdiv(B, s.rows);
  s.smem = s.BC * s.RP * 4;
  return s;
}

struct Candidate {
  Tier tier;
  Layout L;
  int grid;
  Estimate est;
};

// Layout, shared memory and estimate of one (tier, U, BG); false (with why) if it cannot run.
bool evaluate(const PlanRequest& r, const DeviceLimits& dev, Tier tier, int U, int BG, int np, Candidate* out,
              long long* smem_needed) {
  const int e = r.esize, vec = 16 / e, kstep = 32 / e;
  const int RPU = r.backward ? 1 : r.G, NPUB = r.backward ? r.G : 1;
  Layout L{};
  L.tier = (int)tier;
  L.U = U;
  L.NU = (int)cdiv(r.H, U);
  L.Hp = U * L.NU;
  L.BG = BG;
  L.NBG = (int)cdiv(r.B, BG);
  L.Bp = BG * L.NBG;
  L.K = r.backward ? r.G * L.Hp : L.Hp;
  L.Kp = (int)rup(L.K, kstep);
  L.RP = (int)rup((long long)RPU * U, 16);
  const int nq = NPUB * L.NU;  // chunks of U columns per exchanged row
  if (np > 1 && (tier != Tier::GRID || U % kstep != 0)) return false;
  L.CPP = (int)cdiv(nq, np);
  L.NP = (int)cdiv(nq, L.CPP);
  if (L.NP != np) return false;  // the same split as a smaller np
  L.lda = L.Kp + vec;  // +16 bytes: the 8 rows of an ldmatrix hit distinct banks
  L.ldx = (L.NP > 1 ? L.CPP * U : L.Kp) + vec;
  L.ldp = (int)rup(L.RP, 32) + 4;  // accumulator stores of a warp hit distinct banks
  L.nx = tier == Tier::GRID && L.NP == 1 ? 1 : 2;
  L.ppt = (int)cdiv((long long)U * std::min(BG, r.B), kThreads);  // pairs of real rows only
  long long off = 0;
  auto region = [&](long long bytes) { const long long at = off; off = rup(off + bytes, 128); return (int)at; };
  L.off_a = region((long long)L.RP * L.lda * e);
  L.off_x = region((long long)L.nx * BG * L.ldx * e);
  L.off_bias = region(r.backward ? 0 : (long long)L.RP * 4);
  L.off_stage = region(tier == Tier::CLUSTER ? (long long)NPUB * BG * U * e : 0);
  L.off_part = (int)off;
  if (L.ppt > kPairsPerThread) return false;  // more (unit, row) pairs than the threads hold
  *smem_needed = off + (long long)BG * L.ldp * 4 + kStaticSmemReserve;  // with one split-K slice
  const long long budget = (long long)dev.smem_optin - kStaticSmemReserve - off;
  const int MT = L.RP / 16, NT = BG / 8, nk = L.Kp / kstep;
  const Split sp = best_split(MT, NT, nk, e, BG, L.ldp, budget);
  const long long need = off + (long long)(sp.KS ? sp.KS : 1) * BG * L.ldp * 4;
  if (sp.KS == 0 || need + kStaticSmemReserve > dev.smem_optin) return false;
  L.KS = sp.KS; L.WM = sp.WM; L.WN = sp.WN;
  L.smem = (int)need;

  const int grid = L.NBG * L.NU;
  Estimate est;
  const double clk = kModel.clk_per_us;
  const int rows = std::min(BG, r.B);
  if (tier == Tier::CTA) {
    est.sync = kModel.cta_sync_us;
    est.waves = (int)cdiv(L.NBG, dev.sms);
  } else if (tier == Tier::CLUSTER) {
    est.sync = kModel.cta_sync_us + kModel.cluster_barrier_us;
    est.exchange = (double)NPUB * rows * U * e * L.NU / kModel.dsmem_bytes_per_clk / clk;
    est.waves = (int)cdiv(L.NBG, std::max(1, dev.sms / L.NU));
  } else {
    est.sync = kModel.cta_sync_us + kModel.flag_exchange_us;
    const double bytes = (double)BG * L.K * e;
    est.exchange = std::max(bytes / kModel.l2_bytes_per_clk / clk, grid * bytes / kModel.l2_total_bytes_per_us);
  }
  est.compute = sp.cycles / clk + (L.NP - 1) * 2 * kModel.cta_sync_us;
  est.pointwise = (kModel.pointwise_clk + 40.0 * L.ppt * r.G) / clk;
  const double per_step = r.backward
      ? (double)r.B * r.H * (e + 4.0 * r.S + (double)r.G * e * (r.G == 3 ? 2 : 1))
      : (double)r.B * r.H * ((double)r.G * e + e);
  est.io = per_step / kModel.hbm_bytes_per_us;
  est.step = std::max(est.sync + est.exchange + est.compute + est.pointwise, est.io) * est.waves;
  *out = Candidate{tier, L, grid, est};
  return true;
}

std::string kb(long long bytes) { return std::to_string((bytes + 1023) / 1024) + " KB"; }

Plan plan_uncached(const PlanRequest& r, const DeviceLimits& dev) {
  if ((r.G != 1 && r.G != 3 && r.G != 4) || (r.esize != 2 && r.esize != 4) || r.B < 1 || r.H < 1)
    throw std::invalid_argument("make_plan: bad request");
  Plan p;
  const int RPU = r.backward ? 1 : r.G;
  p.step = step_geometry(RPU, r.B, r.H);
  const int vec = 16 / r.esize;

  const bool auto_like = r.mode == Mode::AUTO || r.mode == Mode::PERSISTENT;
  const bool want_cta = auto_like || r.mode == Mode::CTA;
  const bool want_cluster = (auto_like || r.mode == Mode::CLUSTER) && dev.cc_major >= 9 && dev.max_cluster >= 1;
  const bool want_grid = (auto_like || r.mode == Mode::GRID) && dev.cooperative;
  std::string why;
  bool found = false;
  Candidate best{};
  long long cta_need = -1, cluster_need = -1, grid_need = -1;
  if (r.mode == Mode::STEP) {
    why = "per-step mode was requested";
  } else if (dev.cc_major < 8) {
    why = "the persistent kernels need sm_80 or newer (cp.async, bf16 mma)";
  } else {
    std::vector<int> units;
    if (r.units > 0) {
      units.push_back((int)rup(r.units, vec));
    } else {
      const int max_nu = std::max(1, std::min(r.H, std::max(dev.sms, dev.max_cluster)));
      for (int nu = 1; nu <= max_nu; ++nu) {
        const int U = (int)rup(cdiv(r.H, nu), vec);
        if (cdiv(r.H, U) == nu) units.push_back(U);
      }
    }
    std::vector<int> rows;
    const int b8 = (int)rup(r.B, 8);
    if (r.batch_rows > 0) {
      rows.push_back((int)rup(r.batch_rows, 8));
    } else {
      for (int bg = 8; bg < b8; bg *= 2) rows.push_back(bg);
      rows.push_back(b8);
    }
    for (int U : units) {
      const int NU = (int)cdiv(r.H, U);
      for (int BG : rows) {
        const int NBG = (int)cdiv(r.B, BG);
        for (Tier t : {Tier::CTA, Tier::CLUSTER, Tier::GRID}) {
          long long* need = t == Tier::CTA ? &cta_need : t == Tier::CLUSTER ? &cluster_need : &grid_need;
          if (t == Tier::CTA && (!want_cta || NU != 1)) continue;
          if (t == Tier::CLUSTER && (!want_cluster || NU > dev.max_cluster || (NU == 1 && r.mode != Mode::CLUSTER)))
            continue;
          if (t == Tier::GRID && (!want_grid || (NU == 1 && r.mode != Mode::GRID) || NBG * NU > dev.sms)) continue;
          const int max_np = t == Tier::GRID ? (r.backward ? r.G : 1) * NU : 1;
          for (int np = r.passes > 0 && t == Tier::GRID ? std::min(r.passes, max_np) : 1; np <= max_np; ++np) {
            Candidate c;
            long long smem = 0;
            const bool ok = evaluate(r, dev, t, U, BG, np, &c, &smem);
            if (smem > 0 && (*need < 0 || smem < *need)) *need = smem;
            if (!ok) continue;
            if (!found || c.est.step < best.est.step - 1e-9 ||
                (c.est.step <= best.est.step + 1e-9 && c.grid < best.grid)) {
              best = c;
              found = true;
            }
            break;  // more passes only cost more once one fits (or: the forced count)
          }
        }
      }
    }
    if (!found) {
      auto part = [&](const char* name, bool wanted, long long need, const std::string& otherwise) {
        if (!wanted) return std::string();
        return std::string(why.empty() ? "" : "; ") + name + ": " +
               (need > 0 ? "needs at least " + kb(need) + " of shared memory per CTA (the device offers " +
                               kb(dev.smem_optin) + ")"
                         : otherwise);
      };
      const std::string pairs = "more than " + std::to_string(kThreads * kPairsPerThread) +
                                " (unit, batch row) pairs per CTA";
      why += part("one CTA", want_cta, cta_need, pairs);
      why += part("a cluster", want_cluster, cluster_need,
                  "no cluster of at most " + std::to_string(dev.max_cluster) + " CTAs without " + pairs);
      why += part("the grid", want_grid, grid_need,
                  "no grid of at most " + std::to_string(dev.sms) + " co-resident CTAs without " + pairs);
      if (!want_cluster && (auto_like || r.mode == Mode::CLUSTER))
        why += std::string(why.empty() ? "" : "; ") + "clusters need sm_90";
      if (!want_grid && (auto_like || r.mode == Mode::GRID))
        why += std::string(why.empty() ? "" : "; ") + "the device has no cooperative launch";
      if (why.empty()) why = "no persistent tier fits";
    }
  }

  if (found) {
    p.tier = best.tier;
    p.L = best.L;
    p.grid = best.grid;
    p.cluster = best.tier == Tier::CLUSTER ? best.L.NU : 0;
    p.cooperative = best.tier == Tier::GRID;
    p.est = best.est;
    p.reason = std::string(tier_name(best.tier)) + " tier: W_hh's slice of " + std::to_string(best.L.U) +
               " units per CTA fits in " + kb(best.L.smem) + " of shared memory; " + std::to_string(best.L.NBG) +
               " batch group(s) of " + std::to_string(best.L.BG) + " rows";
  } else {
    p.tier = Tier::STEP;
    p.est.sync = kModel.launch_us;  // per step: a launch, W_hh from L2, the matmul on FMA units
    p.est.io = (double)r.G * r.H * r.H * r.esize / kModel.l2_total_bytes_per_us;
    p.est.compute = (double)r.G * r.H * r.H * r.B / (dev.sms * kModel.fma_per_clk) / kModel.clk_per_us;
    p.est.step = p.est.sync + std::max(p.est.io, p.est.compute);
    p.reason = why;
    p.ok = r.mode == Mode::AUTO || r.mode == Mode::STEP;
  }
  // workspace: status words | flags (NBG, NU) | xbuf (2, Bp, Kp) | hbuf (2, B, H) | state (2, B, H) fp32
  const bool grid = p.tier == Tier::GRID;
  long long off = rup(kStatusWords * 4, 256);
  p.off_flags = off;
  off = rup(off + (grid ? 4LL * p.L.NBG * p.L.NU : 0), 256);
  p.off_xbuf = off;
  off = rup(off + (grid ? 2LL * p.L.Bp * p.L.Kp * r.esize : 0), 256);
  p.ws_zeroed = off;
  p.off_hbuf = off;
  off = rup(off + 2LL * r.B * r.H * r.esize, 256);
  p.off_state = off;
  p.ws_bytes = rup(off + 2LL * r.B * r.H * 4, 256);
  return p;
}

}  // namespace

const char* tier_name(Tier t) {
  switch (t) {
    case Tier::CTA: return "cta";
    case Tier::CLUSTER: return "cluster";
    case Tier::GRID: return "grid";
    case Tier::STEP: return "step";
  }
  return "?";
}

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::AUTO: return "auto";
    case Mode::PERSISTENT: return "persistent";
    case Mode::CTA: return "cta";
    case Mode::CLUSTER: return "cluster";
    case Mode::GRID: return "grid";
    case Mode::STEP: return "step";
  }
  return "?";
}

Plan make_plan(const PlanRequest& r, const DeviceLimits& d) {
  using Key = std::tuple<bool, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int>;
  const Key key{r.backward, r.G, r.S, r.esize, r.B, r.H, (int)r.mode, r.units, r.batch_rows, r.passes,
                d.sms, d.smem_optin, d.smem_per_sm, d.regs_per_sm, d.cc_major, d.cc_minor, d.max_cluster,
                d.cooperative};
  static std::mutex mu;
  static std::map<Key, Plan> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  Plan p = plan_uncached(r, d);
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() > 4096) cache.clear();
  cache.emplace(key, p);
  return p;
}

}  // namespace fusedrnn
