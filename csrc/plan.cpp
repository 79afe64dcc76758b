// make_plan: the tier, layout and workspace of one recurrence launch (see plan.h).
//
// Search: every units-per-CTA U (16-byte multiples; NU = ceil(H/U) CTAs per batch group),
// every batch-group size BG (multiples of 8), every tier that can hold that slice, and the
// warp split (KS, WM, WN) of the step matmul; keep the one the cost model says is fastest.
// The model (one table below) is also what benchmarks/NOTES.md predicts from.
#include "plan.h"
#include "machine_model.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <tuple>
#include <vector>

namespace fusedrnn {

namespace {

long long cdiv(long long a, long long b) { return (a + b - 1) / b; }
long long rup(long long a, long long b) { return cdiv(a, b) * b; }

// The cost model's constants: the machine model of fusedrnn/machine.py (one set for both
// backends; its defaults generated into machine_model.h, a calibrated set passed in by the
// caller as PlanRequest::model), per SM unless said otherwise.
struct Model {
  explicit Model(const machine::Constants& m)
      : clk_per_us(m.clock_ghz * 1e3),
        smem_bytes_per_clk(m.smem_bytes_per_clk),
        l2_bytes_per_clk(m.l2_bw_per_sm_gbs * 1e3 / clk_per_us),
        l2_total_bytes_per_us(m.l2_bw_gbs * 1e3),
        hbm_bytes_per_us(m.hbm_bw_gbs * 1e3),
        dsmem_bytes_per_clk(m.dsmem_bytes_per_clk),
        cta_sync_us(m.cta_sync_us),
        cluster_barrier_us(m.cluster_barrier_us),
        flag_exchange_us(m.flag_round_trip_us + m.l2_latency_us),
        mma_dep_clk_16(m.mma_dep_cycles_bf16),
        mma_dep_clk_32(3 * m.mma_dep_cycles_tf32),
        launch_us(m.launch_us),
        fma_per_clk(m.fma_per_clk) {}
  double clk_per_us;             // SM clock, cycles per microsecond
  double smem_bytes_per_clk;     // shared-memory bandwidth
  double l2_bytes_per_clk;       // one SM's share of L2 reads
  double l2_total_bytes_per_us;  // all SMs together
  double hbm_bytes_per_us;
  double dsmem_bytes_per_clk;    // stores into other CTAs' shared memory
  double cta_sync_us;            // the __syncthreads of one step
  double cluster_barrier_us;     // barrier.cluster arrive + wait
  // the grid tier's exchange: the flag's release -> acquire round trip, then the dependent
  // load of the data it guards (two round trips on the step's path)
  double flag_exchange_us;
  double pointwise_clk = 250;        // the cell's expf/tanhf chain and its stores, per pair round
  double proj_pointwise_clk = 100;   // the projection's pointwise: a select, stores (assumed)
  double mma_dep_clk_16;   // one dependent mma.sync k-step of a warp
  double mma_dep_clk_32;   // fp32: 3xTF32, three dependent tf32 mmas
  double launch_us;        // one kernel launch, the per-step fallback's floor
  double fma_per_clk;      // fp32 FMA units (the per-step kernel's matmul)
};

struct Split {
  int KS = 0, WM = 0, WN = 0;
  double cycles = 0;
};

// The warp split of the step matmul (MT m-tiles x NT n-tiles x nk k-steps of 32 bytes)
// with the fewest modelled cycles whose partial sums fit in part_budget bytes.
Split best_split(const Model& M, int MT, int NT, int nk, int esize, int BG, int ldp, long long part_budget) {
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
        const double dep = esize == 2 ? M.mma_dep_clk_16 : M.mma_dep_clk_32;
        const double chain = rounds * kper * std::max(dep, WM * WN * issue);
        const double bytes = (double)nk * (512.0 * MT * NG + 256.0 * NT * MG);  // ldmatrix traffic
        const double bw = bytes / M.smem_bytes_per_clk;
        const double total = (double)MT * NT * nk * c_mma;
        const double reduce = KS > 1 ? 40.0 * KS : 0.0;
        const double cycles = std::max(chain, std::max(bw, total)) + reduce;
        if (best.KS == 0 || cycles < best.cycles - 1e-9) best = Split{KS, WM, WN, cycles};
      }
    }
  }
  return best;
}

StepGeometry step_geometry(int RPU, int B, int units) {
  StepGeometry s{};
  s.U = 4;
  s.RP = (int)rup((long long)RPU * s.U, 8);
  s.BC = std::min(B, 32);
  const long long chunks = cdiv(B, s.BC), per_block = cdiv(chunks, 65535);
  s.rows = (int)(per_block * s.BC);
  s.grid_x = (int)cdiv(units, s.U);
  s.grid_y = (int)cdiv(B, s.rows);
  s.smem = s.BC * s.RP * 4;
  return s;
}

// The shape of one stage (layout.h): output units per CTA, weight rows per unit, and the
// consumed X (cw values per producer and segment, nseg segments).
struct StageShape {
  int rows, rpu, cw, nseg;
  bool cell;  // the cell's pointwise (else the projection's: a store and an exchange)
};

int stage_shapes(const PlanRequest& r, int U, int UP, StageShape* s) {
  if (r.reset_before) {  // the GRU with its reset gate before the product (passes_reset.cuh)
    if (!r.backward) {
      s[0] = {U, 2, U, 1, true};  // r, z = W_hr,z h: 2 rows per unit, h from U-wide chunks
      s[1] = {U, 1, U, 1, true};  // n = W_hn (r ⊙ h): one row per unit, r ⊙ h from U-wide chunks
    } else {
      s[0] = {U, 1, U, 2, true};  // dh = W_hr,zᵀ [dr, dz]: one row per unit, 2 segments of U
      s[1] = {U, 1, U, 1, true};  // d(r ⊙ h) = W_hnᵀ d(n_pre)
    }
    return 2;
  }
  if (!r.backward) {
    if (r.P == 0) {
      s[0] = {U, r.G, U, 1, true};
      return 1;
    }
    s[0] = {U, r.G, UP, 1, true};  // gates = W_hh h: G rows per H-unit, h from UP-wide chunks
    s[1] = {UP, 1, U, 1, false};   // h = W_hr m: one row per P-unit, m from U-wide chunks
    return 2;
  }
  if (r.P == 0) {
    s[0] = {U, 1, U, r.G, true};
    return 1;
  }
  s[0] = {UP, 1, U, r.G, false};   // dh = W_hhᵀ d_gates: one row per P-unit, G segments of U
  s[1] = {U, 1, UP, 1, true};      // dm = W_hrᵀ dh: one row per H-unit, dh from UP-wide chunks
  return 2;
}

struct Candidate {
  Tier tier;
  Layout L;
  int grid;
  Estimate est;
};

// Layout, shared memory and estimate of one (tier, U, BG, np); false (with why) if it cannot run.
// row_align: the weight rows a stage keeps, a multiple of 16 (whole m-tiles) or of 8 (an unpadded
// slice: step_matmul.cuh's last m-tile reads its rows 0-7 twice).
bool evaluate(const Model& M, const PlanRequest& r, const DeviceLimits& dev, Tier tier, int U, int BG, int np,
              int row_align, Candidate* out, long long* smem_needed) {
  const int e = r.esize, vec = 16 / e, kstep = 32 / e;
  Layout L{};
  L.tier = (int)tier;
  L.U = U;
  L.NU = (int)cdiv(r.H, U);
  L.Hp = U * L.NU;
  L.UP = r.P > 0 ? (int)rup(cdiv(r.P, L.NU), vec) : U;
  L.Pp = L.UP * L.NU;
  L.BG = BG;
  L.NBG = (int)cdiv(r.B, BG);
  L.Bp = BG * L.NBG;
  L.D = r.D;
  StageShape sh[kMaxStages];
  L.nst = stage_shapes(r, U, L.UP, sh);
  if (np > 1 && tier != Tier::GRID) return false;
  const int rows = std::min(BG, r.B);
  for (int k = 0; k < L.nst; ++k) {
    Stage& S = L.st[k];
    S.cw = sh[k].cw;
    S.nseg = sh[k].nseg;
    S.rows = sh[k].rows;
    S.K = S.nseg * S.cw * L.NU;
    S.Kp = (int)rup(S.K, kstep);
    S.RP = (int)rup((long long)sh[k].rpu * S.rows, row_align);
    const int nq = S.nseg * L.NU;  // chunks of cw columns per X row
    int npk = std::min(np, nq);
    if (npk > 1 && S.cw % kstep != 0) {
      if (k == 0) return false;
      npk = 1;  // a later stage whose chunks are not k-step multiples takes its K in one pass
    }
    S.CPP = (int)cdiv(nq, npk);
    S.NP = (int)cdiv(nq, S.CPP);
    if (k == 0 && S.NP != np) return false;  // the same split as a smaller np
    S.lda = S.Kp + vec;  // +16 bytes: the 8 rows of an ldmatrix hit distinct banks
    S.ldx = (S.NP > 1 ? S.CPP * S.cw : S.Kp) + vec;
    S.ldp = (int)rup(S.RP, 32) + 4;  // accumulator stores of a warp hit distinct banks
    // two X buffers where a producer may write round r+1 while a consumer reads round r (one
    // stage per step, tiers 1 and 2), or where tier 3 streams passes; with two stages a
    // round's buffer is rewritten only after every CTA has passed the other stage's barrier
    S.nx = tier == Tier::GRID ? (S.NP > 1 ? 2 : 1) : (L.nst == 1 ? 2 : 1);
    S.ppt = (int)cdiv((long long)S.rows * rows, kThreads);  // pairs of real rows only
    L.Kx = std::max(L.Kx, S.Kp);
  }
  long long off = 0;
  auto region = [&](long long bytes) { const long long at = off; off = rup(off + bytes, 128); return (int)at; };
  for (int k = 0; k < L.nst; ++k) L.st[k].off_a = region((long long)L.st[k].RP * L.st[k].lda * e);
  for (int k = 0; k < L.nst; ++k) L.st[k].off_x = region((long long)L.st[k].nx * BG * L.st[k].ldx * e);
  // the forward's b_hh rows of stage 0 (and, where stage 1 is a cell's product too, after them its own)
  L.off_bias = region(r.backward ? 0 : (long long)(L.st[0].RP + (L.nst > 1 && sh[1].cell ? L.st[1].RP : 0)) * 4);
  long long stage_bytes = 0;
  for (int k = 0; k < L.nst; ++k) {
    L.st[k].off_out = (int)stage_bytes;
    stage_bytes += tier == Tier::CLUSTER ? rup((long long)L.st[k].nseg * BG * L.st[k].cw * e, 16) : 0;
  }
  L.off_stage = region(stage_bytes);
  L.off_part = (int)off;
  for (int k = 0; k < L.nst; ++k)
    if (L.st[k].ppt > kPairsPerThread) return false;  // more (unit, row) pairs than the threads hold
  long long slice = 0;  // one split-K slice of the partial sums, the larger stage's
  for (int k = 0; k < L.nst; ++k) slice = std::max(slice, (long long)BG * L.st[k].ldp * 4);
  *smem_needed = off + slice + kStaticSmemReserve;
  const long long budget = (long long)dev.smem_optin - kStaticSmemReserve - off;
  Split sp[kMaxStages];
  long long part = 0;
  for (int k = 0; k < L.nst; ++k) {
    Stage& S = L.st[k];
    sp[k] = best_split(M, (int)cdiv(S.RP, 16), BG / 8, S.Kp / kstep, e, BG, S.ldp, budget);
    if (sp[k].KS == 0) return false;
    S.KS = sp[k].KS; S.WM = sp[k].WM; S.WN = sp[k].WN;
    part = std::max(part, (long long)S.KS * BG * S.ldp * 4);
  }
  const long long need = off + part;
  if (need + kStaticSmemReserve > dev.smem_optin) return false;
  L.smem = (int)need;

  const int grid = L.D * L.NBG * L.NU;
  Estimate est;
  const double clk = M.clk_per_us;
  if (tier == Tier::CTA) {
    est.sync = M.cta_sync_us * L.nst;
    est.waves = (int)cdiv((long long)L.D * L.NBG, dev.sms);
  } else if (tier == Tier::CLUSTER) {
    est.sync = (M.cta_sync_us + M.cluster_barrier_us) * L.nst;
    for (int k = 0; k < L.nst; ++k)
      est.exchange += (double)L.st[k].nseg * rows * L.st[k].cw * e * L.NU / M.dsmem_bytes_per_clk / clk;
    est.waves = (int)cdiv((long long)L.D * L.NBG, std::max(1, dev.sms / L.NU));
  } else {
    est.sync = (M.cta_sync_us + M.flag_exchange_us) * L.nst;
    for (int k = 0; k < L.nst; ++k) {
      const double bytes = (double)BG * L.st[k].K * e;
      est.exchange += std::max(bytes / M.l2_bytes_per_clk / clk, grid * bytes / M.l2_total_bytes_per_us);
    }
  }
  for (int k = 0; k < L.nst; ++k) {
    // every pass beyond the first waits on its producers' flags and loads their data: two
    // more round trips on the step's path, and its own barriers
    est.compute += sp[k].cycles / clk + (L.st[k].NP - 1) * (2 * M.cta_sync_us + M.flag_exchange_us);
    est.pointwise += sh[k].cell ? (M.pointwise_clk + 40.0 * L.st[k].ppt * r.G) / clk
                                : (M.proj_pointwise_clk + 40.0 * L.st[k].ppt) / clk;
  }
  const int P = r.P > 0 ? r.P : r.H;
  const double per_step = r.backward
      ? (double)r.B * ((double)P * e + 4.0 * r.S * r.H + (double)r.G * r.H * e * (r.G == 3 && !r.reset_before ? 2 : 1) +
                       (r.P > 0 ? 4.0 * r.P : 0.0))
      : (double)r.B * ((double)r.G * r.H * e + (double)P * e);
  est.io = per_step * L.D / M.hbm_bytes_per_us;
  est.step = std::max(est.sync + est.exchange + est.compute + est.pointwise, est.io) * est.waves;
  *out = Candidate{tier, L, grid, est};
  return true;
}

std::string kb(long long bytes) { return std::to_string((bytes + 1023) / 1024) + " KB"; }

Plan plan_uncached(const PlanRequest& r, const DeviceLimits& dev) {
  if ((r.G != 1 && r.G != 3 && r.G != 4) || (r.esize != 2 && r.esize != 4) || r.B < 1 || r.H < 1 ||
      r.P < 0 || r.P >= r.H || (r.P > 0 && r.G != 4) || (r.D != 1 && r.D != 2) ||
      (r.reset_before && (r.G != 3 || r.P > 0)))
    throw std::invalid_argument("make_plan: bad request");
  const Model M(r.model);
  Plan p;
  const int P = r.P > 0 ? r.P : r.H;
  {  // the per-step kernels: one per stage, over the stage's output units
    StageShape sh[kMaxStages];
    p.nstep = stage_shapes(r, 1, 1, sh);
    for (int k = 0; k < p.nstep; ++k) {
      const bool p_units = r.P > 0 && (r.backward ? k == 0 : k == 1);
      p.step[k] = step_geometry(sh[k].rpu, r.B, p_units ? P : r.H);
    }
  }
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
    // weight rows in whole m-tiles of 16; only where no plan fits them, rows in 8s (an 8-unit
    // backward slice of W_hhᵀ padded to 16 rows is half zeros: the LSTM fp32 at B64·H1024)
    for (int row_align : {16, 8}) {
      if (found) break;
      for (int U : units) {
        const int NU = (int)cdiv(r.H, U);
        for (int BG : rows) {
          const int NBG = (int)cdiv(r.B, BG);
          for (Tier t : {Tier::CTA, Tier::CLUSTER, Tier::GRID}) {
            long long* need = t == Tier::CTA ? &cta_need : t == Tier::CLUSTER ? &cluster_need : &grid_need;
            if (t == Tier::CTA && (!want_cta || NU != 1)) continue;
            if (t == Tier::CLUSTER && (!want_cluster || NU > dev.max_cluster || (NU == 1 && r.mode != Mode::CLUSTER)))
              continue;
            if (t == Tier::GRID && (!want_grid || (NU == 1 && r.mode != Mode::GRID) || r.D * NBG * NU > dev.sms ||
                                    NU > kMaxGridProducers))
              continue;
            const int max_np = t == Tier::GRID ? (r.backward ? r.G : 1) * NU : 1;
            for (int np = r.passes > 0 && t == Tier::GRID ? std::min(r.passes, max_np) : 1; np <= max_np; ++np) {
              Candidate c;
              long long smem = 0;
              const bool ok = evaluate(M, r, dev, t, U, BG, np, row_align, &c, &smem);
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
    p.reason = std::string(tier_name(best.tier)) + " tier: W_hh's slice" + (r.P > 0 ? " and W_hr's" : "") + " of " +
               std::to_string(best.L.U) + " units per CTA fits in " + kb(best.L.smem) + " of shared memory; " +
               std::to_string(best.L.NBG) + " batch group(s) of " + std::to_string(best.L.BG) + " rows" +
               (r.D > 1 ? " per direction, both directions in one launch" : "");
  } else {
    // per step and stage: a launch, the weights from L2, the matmul on FMA units; directions in turn
    const double weights = (double)r.G * r.H * P + (r.P > 0 ? (double)P * r.H : 0.0);
    p.tier = Tier::STEP;
    p.est.sync = M.launch_us * p.nstep;
    p.est.io = weights * r.esize / M.l2_total_bytes_per_us;
    p.est.compute = weights * r.B / (dev.sms * M.fma_per_clk) / M.clk_per_us;
    p.est.step = (p.est.sync + std::max(p.est.io, p.est.compute)) * r.D;
    p.reason = why;
    p.ok = r.mode == Mode::AUTO || r.mode == Mode::STEP;
  }
  // workspace: status words | flags (D, NBG, NU) | xbuf (2, D*Bp, Kx) | hbuf (2, B, P) |
  // mbuf (B, max(H, P)), with a projection or a reset gate before the product | state (B, P + H) fp32
  const bool grid = p.tier == Tier::GRID;
  long long off = rup(kStatusWords * 4, 256);
  p.off_flags = off;
  off = rup(off + (grid ? 4LL * p.L.D * p.L.NBG * p.L.NU : 0), 256);
  p.off_xbuf = off;
  off = rup(off + (grid ? 2LL * p.L.D * p.L.Bp * p.L.Kx * r.esize : 0), 256);
  p.ws_zeroed = off;
  p.off_hbuf = off;
  off = rup(off + 2LL * r.B * P * r.esize, 256);
  p.off_mbuf = off;
  off = rup(off + (r.P > 0 || r.reset_before ? (long long)r.B * std::max(r.H, P) * r.esize : 0), 256);
  p.off_state = off;
  p.ws_bytes = rup(off + (long long)r.B * (P + r.H) * 4, 256);
  return p;
}

}  // namespace

Plan make_plan_fitted(const PlanRequest& r, DeviceLimits dev, const std::function<int(int, int)>& active) {
  Plan p = make_plan(r, dev);
  int refused = 0;
  while (p.tier == Tier::CLUSTER && active(p.cluster, p.L.smem) == 0) {
    if (refused == 0) refused = p.cluster;
    dev.max_cluster = p.cluster > machine::limits::portable_cluster ? machine::limits::portable_cluster : p.cluster - 1;
    p = make_plan(r, dev);
  }
  if (refused > 0)
    p.reason += "; clusters of " + std::to_string(refused) +
                " CTAs do not fit this kernel's registers and shared memory on the device "
                "(cudaOccupancyMaxActiveClusters is 0), so " +
                (p.tier == Tier::CLUSTER ? "clusters were limited to " + std::to_string(dev.max_cluster) + " CTAs"
                                         : std::string("no cluster was planned"));
  return p;
}

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
  using Key = std::tuple<bool, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int,
                         int, int, bool>;
  const Key shape{r.backward, r.G, r.S, r.esize, r.B, r.H, r.P, r.D, (int)r.mode, r.units, r.batch_rows, r.passes,
                  d.sms, d.smem_optin, d.smem_per_sm, d.regs_per_sm, d.cc_major, d.cc_minor, d.max_cluster,
                  d.cooperative, r.reset_before};
  // the model's constants too (a struct of doubles: its bytes), so a calibrated set plans afresh
  const auto key = std::make_pair(shape, std::string(reinterpret_cast<const char*>(&r.model), sizeof(r.model)));
  static std::mutex mu;
  static std::map<std::pair<Key, std::string>, Plan> cache;
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
