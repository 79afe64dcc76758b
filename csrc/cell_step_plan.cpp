// make_cell_step_plan (cell_step_plan.h). The model, per call: the weights stream from HBM
// once (3.0 TB/s reached by a streaming read on an H100; assumed); every CTA also reads its
// NB rows of x and h0 (L1-cached for the CTA's other units, from L2 once per CTA, 5.5 TB/s
// assumed); a CTA costs ~0.4 µs beyond its loads (its start, the reduction, the pointwise),
// and CTAs beyond two per SM run in further waves. Among units-per-CTA 8, 4, 2, 1 (1, 2, 4,
// 8 warps per unit) the cheapest wins; ties go to fewer CTAs.
#include "cell_step_plan.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace fusedrnn {

namespace {
constexpr double kHbmBytesPerUs = 3.0e6, kL2BytesPerUs = 5.5e6, kCtaUs = 0.4;
constexpr int kCtasPerSm = 2;  // resident at once (registers of the NB = 8 kernel; assumed)
long long cdiv(long long a, long long b) { return (a + b - 1) / b; }
}  // namespace

CellStepPlan make_cell_step_plan(const CellStepRequest& r, const DeviceLimits& dev) {
  if (r.G < 1 || r.B < 1 || r.I < 1 || r.H < 1 || (r.esize != 2 && r.esize != 4) || dev.sms < 1)
    throw std::invalid_argument("make_cell_step_plan: bad request");
  CellStepPlan best;
  const double weights = (double)r.G * r.H * ((double)r.I + r.H) * r.esize;
  const int NB = r.B == 1 ? 1 : 8;
  bool found = false;
  for (int UB : {8, 4, 2, 1}) {
    CellStepPlan c;
    c.UB = UB;
    c.KW = kWarps / UB;
    c.NB = NB;
    c.grid_x = (int)cdiv(r.H, UB);
    c.grid_y = (int)cdiv(r.B, NB);
    const long long ctas = (long long)c.grid_x * c.grid_y;
    const double rows = (double)ctas * std::min(NB, r.B) * ((double)r.I + r.H) * r.esize;
    const long long resident = (long long)dev.sms * kCtasPerSm;
    const long long waves = cdiv(ctas, resident);
    const double busy = (double)std::min<long long>(ctas, resident) / (double)resident;
    // weights at HBM speed only if enough CTAs run to keep it busy (assumed: linear in the busy share)
    const double stream = weights * (r.B > NB ? (double)c.grid_y : 1.0) / (kHbmBytesPerUs * std::max(busy, 0.05));
    c.weight_mb = weights / 1e6;
    c.est_us = std::max(stream, (weights + rows) / kL2BytesPerUs) + kCtaUs * waves;
    if (!found || c.est_us < best.est_us - 1e-9) {
      best = c;
      found = true;
    }
  }
  char text[160];
  std::snprintf(text, sizeof text,
                "%d CTAs of %d unit(s) x %d row(s), %d warp(s) per unit: %.1f MB of weights read once",
                best.grid_x * best.grid_y, best.UB, best.NB, best.KW, best.weight_mb);
  best.reason = text;
  return best;
}

}  // namespace fusedrnn
