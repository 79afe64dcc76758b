// How the vector a stage consumes (layout.h: h, m, d_gates or dh) reaches every CTA of a
// batch group: the one staging path of both directions, every stage, per tier.
//
// Exchange rounds are numbered in the order the CTAs publish them (every CTA publishes every
// round, with or without values of its own); a stage always consumes the latest round.
//   tier 1 (cta)     X lives in smem; producers are the CTA's own threads; __syncthreads
//                    orders everything.
//   tier 2 (cluster) X lives in every CTA's smem; each CTA stages its slice, then stores it
//                    16 bytes at a time into all CTAs of the cluster (distributed shared
//                    memory) and arrives on the cluster barrier (release); consumers wait on
//                    it (acquire) before the matmul.
//   tier 3 (grid)    round r lives in the global buffer xbuf[r & 1] (D*Bp rows of Kx); each
//                    CTA writes its slice there, then releases its flag (gpu scope) with the
//                    value r + 1. A consumer acquires the flag of each producer of its batch
//                    group, in the order they arrive, and copies that chunk into smem with
//                    16-byte cp.async; it waits for nothing else. K streams through smem in
//                    NP passes, two buffers deep.
// Buffer reuse. Tier 3: a producer overwrites xbuf[r & 1] with round r + 2 only after it
// has acquired round r + 1 from every CTA of its group, each of which had finished copying
// round r before it published r + 1. Tiers 1 and 2 with one stage per step: X is double-
// buffered by round parity (a producer may store round r + 1 while a slower consumer still
// multiplies round r). With two stages each stage has its own buffer: a producer stores a
// stage's next round only after the barrier of the other stage's round, which every CTA
// passes after its matmul of that stage's previous round.
// A tier-3 wait that spins past ws.spin_limit records the step and CTAs in ws.status (the
// first one only), prints them, and latches: later waits return at once and the kernel's
// results are NaN from then on, so a broken exchange is loud even unchecked.
// Padding (units past H or P, columns >= K, rows >= B) is zero in every copy of X: smem is
// zeroed at start and xbuf by the launcher, and nothing ever writes a padded position.
#pragma once
#include <cstdio>

#include "device.cuh"
#include "step_matmul.cuh"

namespace fusedrnn {

struct Workspace {
  unsigned* status;       // kStatusWords: [0] error kind (0 none, 1 flag wait timed out), [1..] details
  unsigned* flags;        // (D, NBG, NU): exchange rounds published by each CTA (tier 3)
  void* xbuf;             // (2, D*Bp, Kx) dtype: X of tier 3
  long long spin_limit;   // clock cycles a flag wait spins before it reports a timeout
};

// Which slice a CTA owns: direction dir, H-units [j0, j0 + nu), P-units [jp0, jp0 + np), batch
// rows [b0, b0 + nb) (nu, np, nb may be 0); grp = dir*NBG + bg indexes flags and xbuf rows.
struct Cta {
  int rank, bg, dir, grp, j0, nu, jp0, np, b0, nb;
  __device__ static Cta of(const Layout& L, int B, int H, int P) {
    Cta c;
    c.rank = blockIdx.x % L.NU;  // == %cluster_ctarank in tier 2: clusters are NU consecutive CTAs
    c.grp = blockIdx.x / L.NU;
    c.bg = c.grp % L.NBG;
    c.dir = c.grp / L.NBG;
    c.j0 = c.rank * L.U;
    c.nu = max(0, min(L.U, H - c.j0));
    c.jp0 = c.rank * L.UP;
    c.np = max(0, min(L.UP, P - c.jp0));
    c.b0 = c.bg * L.BG;
    c.nb = max(0, min(L.BG, B - c.b0));
    return c;
  }
};

template <typename T>
struct Exchange {
  const Layout& L;
  Cta c;
  unsigned char* smem;  // dynamic smem base: stage k's X at L.st[k].off_x, its outgoing slice (tier 2)
                        // at L.off_stage + L.st[k].off_out
  Workspace ws;
  volatile int* abort;  // smem: latched once a wait timed out, so later waits return at once
  int backward;         // 0 the forward kernel, 1 the backward one (for error reports)

  static constexpr int kVec = 16 / sizeof(T);

  // Tiers 1, 2: stage k's X holding round r.
  __device__ T* operand(int k, int r) const {
    const Stage& S = L.st[k];
    return reinterpret_cast<T*>(smem + S.off_x) + (size_t)((r / L.nst) & (S.nx - 1)) * L.BG * S.ldx;
  }

  // Tier 2: stage k's X as it leaves this CTA, (nseg, BG, cw).
  __device__ T* outgoing(int k) const { return reinterpret_cast<T*>(smem + L.off_stage + L.st[k].off_out); }

  // The value of (segment g, row bb, unit u) of round r, which stage k consumes.
  __device__ void put(int r, int k, int g, int bb, int u, T v) const {
    const Stage& S = L.st[k];
    const int col = g * S.cw * L.NU + c.rank * S.cw + u;
    if (L.tier == 1) {
      operand(k, r)[(size_t)bb * S.ldx + col] = v;
    } else if (L.tier == 2) {
      outgoing(k)[((size_t)g * L.BG + bb) * S.cw + u] = v;
    } else {
      T* xg = static_cast<T*>(ws.xbuf);
      xg[((size_t)(r & 1) * L.D * L.Bp + (size_t)c.grp * L.BG + bb) * L.Kx + col] = v;
    }
  }

  // Tier 2: every CTA must have zeroed its smem before any CTA stores into it.
  __device__ void begin() const {
    if (L.tier == 2) {
      cluster_arrive();
      cluster_wait();
    }
  }
  // Tier 2: no CTA may exit while another can still store into its smem.
  __device__ void end() const { begin(); }

  // After the puts of round r (for stage k): make it visible to its consumers.
  __device__ void publish(int r, int k) const {
    __syncthreads();
    if (L.tier == 2) {
      const Stage& S = L.st[k];
      const int pr = S.cw / kVec, n = L.NU * S.nseg * c.nb * pr;
      const uint32_t base = smem_addr(operand(k, r));
      const T* stage = outgoing(k);
      for (int i = threadIdx.x; i < n; i += kThreads) {
        const int dst = i % L.NU, rest = i / L.NU, q = rest % pr, gb = rest / pr, bb = gb % c.nb, g = gb / c.nb;
        const uint4 v = *reinterpret_cast<const uint4*>(stage + ((size_t)g * L.BG + bb) * S.cw + q * kVec);
        const int col = g * S.cw * L.NU + c.rank * S.cw + q * kVec;
        const uint32_t at = base + (uint32_t)(((size_t)bb * S.ldx + col) * sizeof(T));
        st_cluster16(map_rank(at, dst), v);
      }
      __syncwarp();  // barrier.cluster.*.aligned: the warp arrives converged
      cluster_arrive();
    } else if (L.tier == 3 && threadIdx.x == 0) {
      __threadfence();
      st_release(ws.flags + c.grp * L.NU + c.rank, (unsigned)(r + 1));
    }
  }

  // Tiers 1 and 2, before the matmul of a stage: its round complete in operand(k, r).
  __device__ void consume() const {
    if (L.tier == 2) cluster_wait();
  }

  // Tier 3: the matmul of stage k over round r streamed through smem in NP passes of CPP
  // chunks (chunk q = cw columns [q*cw, q*cw + cw) = segment q / NU of producer q % NU).
  // Pass p + 1's chunks are copied (each as soon as its producer's flag says so) while
  // pass p multiplies. `step` only labels a timeout report.
  __device__ void stream_multiply(int k, int r, int step, const T* A, float* part) const {
    constexpr int KE = 32 / sizeof(T);
    const Stage& S = L.st[k];
    const int nq = S.nseg * L.NU, nk = S.Kp / KE;
    T* xs = reinterpret_cast<T*>(smem + S.off_x);
    T* buf[2] = {xs, xs + (size_t)L.BG * S.ldx};
    fetch(S, r, step, 0, min(S.CPP, nq), buf[0]);
    for (int p = 0; p < S.NP; ++p) {
      const int q0 = p * S.CPP, q1 = min(nq, q0 + S.CPP);
      if (p + 1 < S.NP) {
        fetch(S, r, step, q1, min(nq, q1 + S.CPP), buf[(p + 1) & 1]);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      // the last pass also covers the zero columns [K, Kp) (NP == 1 only: NP > 1 has cw % KE == 0)
      step_matmul<T>(A, buf[p & 1], q0 * S.cw, part, S, L.BG, q0 * S.cw / KE, p + 1 == S.NP ? nk : q1 * S.cw / KE,
                     p > 0);
      if (p + 1 < S.NP) __syncthreads();  // buf[p & 1] is refilled by pass p + 2
    }
  }

  // Copy chunks [q0, q1) of round r into dst (column (q - q0)*cw), each once its producer's
  // flag reaches r + 1, in the order they arrive; rows [0, BG); commits one cp.async group.
  __device__ void fetch(const Stage& S, int r, int step, int q0, int q1, T* dst) const {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const unsigned want = (unsigned)(r + 1);
    const T* src = static_cast<const T*>(ws.xbuf) + ((size_t)(r & 1) * L.D * L.Bp + (size_t)c.grp * L.BG) * L.Kx;
    const unsigned* flags = ws.flags + c.grp * L.NU;
    const int n = q1 - q0, mine = warp < n ? ceil_div(n - warp, kWarps) : 0;  // chunks q0 + warp + 8i
    for (int base = 0; base < mine; base += 32) {  // 32 chunks per warp at a time: one bit each
      const int cnt = min(32, mine - base);
      uint32_t pending = cnt == 32 ? 0xffffffffu : ((1u << cnt) - 1u);
      const long long start = clock64();
      while (pending) {  // pending, and every branch below, is uniform across the warp
        bool progressed = false;
        const bool aborted = __any_sync(0xffffffffu, *abort != 0);
        for (int i = 0; i < cnt; ++i) {
          if (!((pending >> i) & 1u)) continue;
          const int q = q0 + warp + (base + i) * kWarps;
          const unsigned seen = ld_acquire(flags + q % L.NU);
          if (__all_sync(0xffffffffu, seen >= want) || aborted) {
            const int pr = S.cw / kVec;
            for (int k = lane; k < L.BG * pr; k += 32) {
              const int bb = k / pr, piece = k % pr;
              cp_async16(dst + (size_t)bb * S.ldx + (q - q0) * S.cw + piece * kVec,
                         src + (size_t)bb * L.Kx + q * S.cw + piece * kVec);
            }
            pending &= ~(1u << i);
            progressed = true;
          }
        }
        if (!progressed && pending && __any_sync(0xffffffffu, clock64() - start > ws.spin_limit)) {
          const int q = q0 + warp + (base + __ffs(pending) - 1) * kWarps;
          if (lane == 0) timed_out(step, q % L.NU, ld_acquire(flags + q % L.NU), want);
          *abort = 1;
        }
      }
    }
    cp_async_commit();
  }

  __device__ void timed_out(int s, int chunk, unsigned seen, unsigned want) const {
    if (atomicCAS(ws.status, 0u, 1u) == 0u) {
      ws.status[1] = (unsigned)backward;
      ws.status[2] = (unsigned)s;
      ws.status[3] = blockIdx.x;
      ws.status[4] = (unsigned)(c.grp * L.NU + chunk);
      ws.status[5] = seen;
      ws.status[6] = want;
      __threadfence();
      printf("fusedrnn: %s persistent kernel, grid tier: CTA %d timed out at step %d waiting for the chunk of CTA %d "
             "(its flag is %u, wanted %u)\n",
             backward ? "backward" : "forward", (int)blockIdx.x, s, c.grp * L.NU + chunk, seen, want);
    }
  }
};

}  // namespace fusedrnn
