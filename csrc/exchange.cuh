// How the vector exchanged between steps (forward h, backward d_gh) reaches every CTA
// of a batch group: the one staging path of both directions, per tier.
//
// X_e is the value of exchange round e (forward: X_0 = h0, X_{s+1} = h after step s;
// backward: X_{s+1} = d_gh of phase s). Step s consumes X_s and publishes X_{s+1}.
//   tier 1 (cta)     X lives in smem, double-buffered; producers are the CTA's own
//                    threads; __syncthreads orders everything.
//   tier 2 (cluster) X lives in every CTA's smem, double-buffered; each CTA stages its
//                    slice, then stores it 16 bytes at a time into all CTAs of the cluster
//                    (distributed shared memory) and arrives on the cluster barrier
//                    (release); consumers wait on it (acquire) before the matmul.
//   tier 3 (grid)    X_e lives in the global buffer xbuf[e & 1] (Bp, Kp); each CTA writes
//                    its slice there, then releases its flag (gpu scope) with the value
//                    e + 1. A consumer acquires the flag of each producer of its batch
//                    group, in the order they arrive, and copies that chunk into smem with
//                    16-byte cp.async; it waits for nothing else. K streams through smem
//                    in NP passes, two buffers deep. Double buffering of xbuf is safe:
//                    a producer overwrites xbuf[e & 1] only after it has acquired X_{e-1}
//                    from every CTA of its group, each of which had finished copying
//                    X_{e-2} before it published X_{e-1}.
// A tier-3 wait that spins past ws.spin_limit records the step and CTAs in ws.status (the
// first one only), prints them, and latches: later waits return at once and the kernel's
// results are NaN from then on, so a broken exchange is loud even unchecked.
// Padding (units j >= H, columns >= K, rows >= B) is zero in every copy of X: smem is
// zeroed at start and xbuf by the launcher, and nothing ever writes a padded position.
#pragma once
#include <cstdio>

#include "device.cuh"
#include "step_matmul.cuh"

namespace fusedrnn {

struct Workspace {
  unsigned* status;       // kStatusWords: [0] error kind (0 none, 1 flag wait timed out), [1..] details
  unsigned* flags;        // (NBG, NU): exchange rounds published by each CTA (tier 3)
  void* xbuf;             // (2, Bp, Kp) dtype: X of tier 3
  long long spin_limit;   // clock cycles a flag wait spins before it reports a timeout
};

// Which slice a CTA owns: units [j0, j0 + nu), batch rows [b0, b0 + nb) (nu, nb may be 0).
struct Cta {
  int rank, bg, j0, nu, b0, nb;
  __device__ static Cta of(const Layout& L, int B, int H) {
    Cta c;
    c.rank = blockIdx.x % L.NU;  // == %cluster_ctarank in tier 2: clusters are NU consecutive CTAs
    c.bg = blockIdx.x / L.NU;
    c.j0 = c.rank * L.U;
    c.nu = max(0, min(L.U, H - c.j0));
    c.b0 = c.bg * L.BG;
    c.nb = max(0, min(L.BG, B - c.b0));
    return c;
  }
};

template <typename T, int NPUB>  // NPUB segments of U units per published row: 1 forward, G backward
struct Exchange {
  const Layout& L;
  Cta c;
  T* xs;           // smem X: nx buffers of (BG, ldx)
  T* stage;        // smem (NPUB, BG, U): tier 2's outgoing slice
  Workspace ws;
  volatile int* abort;  // smem: latched once a wait timed out, so later waits return at once
  int dir;         // 0 forward, 1 backward (for error reports)

  static constexpr int kVec = 16 / sizeof(T);

  __device__ T* operand(int s) const { return xs + (size_t)(s & 1) * L.BG * L.ldx; }  // tiers 1, 2

  // The published value of (segment g, row bb, unit u) for round s + 1.
  __device__ void put(int s, int g, int bb, int u, T v) const {
    const int col = g * L.Hp + c.j0 + u;
    if (L.tier == 1) {
      xs[(size_t)((s + 1) & 1) * L.BG * L.ldx + (size_t)bb * L.ldx + col] = v;
    } else if (L.tier == 2) {
      stage[((size_t)g * L.BG + bb) * L.U + u] = v;
    } else {
      T* xg = static_cast<T*>(ws.xbuf);
      xg[((size_t)((s + 1) & 1) * L.Bp + c.b0 + bb) * L.Kp + col] = v;
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

  // After the puts of step s (s = -1: the initial X_0): make X_{s+1} visible to its consumers.
  __device__ void publish(int s) const {
    __syncthreads();
    if (L.tier == 2) {
      const int pr = L.U / kVec, n = L.NU * NPUB * c.nb * pr;
      const uint32_t base = smem_addr(xs + (size_t)((s + 1) & 1) * L.BG * L.ldx);
      for (int i = threadIdx.x; i < n; i += kThreads) {
        const int r = i % L.NU, rest = i / L.NU, q = rest % pr, gb = rest / pr, bb = gb % c.nb, g = gb / c.nb;
        const uint4 v = *reinterpret_cast<const uint4*>(stage + ((size_t)g * L.BG + bb) * L.U + q * kVec);
        const uint32_t at = base + (uint32_t)(((size_t)bb * L.ldx + g * L.Hp + c.j0 + q * kVec) * sizeof(T));
        st_cluster16(map_rank(at, r), v);
      }
      __syncwarp();  // barrier.cluster.*.aligned: the warp arrives converged
      cluster_arrive();
    } else if (L.tier == 3 && threadIdx.x == 0) {
      __threadfence();
      st_release(ws.flags + c.bg * L.NU + c.rank, (unsigned)(s + 2));
    }
  }

  // Tiers 1 and 2, before the matmul of step s: X_s complete in operand(s).
  __device__ void consume(int) const {
    if (L.tier == 2) cluster_wait();
  }

  // Tier 3: the matmul of step s over X_s streamed through smem in NP passes of CPP chunks
  // (chunk q = U columns [q*U, q*U + U) = segment q / NU of producer q % NU). Pass p + 1's
  // chunks are copied (each as soon as its producer's flag says so) while pass p multiplies.
  __device__ void stream_multiply(int s, const T* A, float* part) const {
    constexpr int KE = 32 / sizeof(T);
    const int nq = NPUB * L.NU, nk = L.Kp / KE;
    T* buf[2] = {xs, xs + (size_t)L.BG * L.ldx};
    fetch(s, 0, min(L.CPP, nq), buf[0]);
    for (int p = 0; p < L.NP; ++p) {
      const int q0 = p * L.CPP, q1 = min(nq, q0 + L.CPP);
      if (p + 1 < L.NP) {
        fetch(s, q1, min(nq, q1 + L.CPP), buf[(p + 1) & 1]);
        asm volatile("cp.async.wait_group 1;\n" ::: "memory");
      } else {
        asm volatile("cp.async.wait_group 0;\n" ::: "memory");
      }
      __syncthreads();
      // the last pass also covers the zero columns [K, Kp) (NP == 1 only: NP > 1 has U % KE == 0)
      step_matmul<T>(A, buf[p & 1], q0 * L.U, part, L, q0 * L.U / KE, p + 1 == L.NP ? nk : q1 * L.U / KE, p > 0);
      if (p + 1 < L.NP) __syncthreads();  // buf[p & 1] is refilled by pass p + 2
    }
  }

  // Copy chunks [q0, q1) of round s into dst (column (q - q0)*U), each once its producer's
  // flag reaches s + 1, in the order they arrive; rows [0, BG); commits one cp.async group.
  __device__ void fetch(int s, int q0, int q1, T* dst) const {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const unsigned want = (unsigned)(s + 1);
    const T* src = static_cast<const T*>(ws.xbuf) + ((size_t)(s & 1) * L.Bp + c.b0) * L.Kp;
    const unsigned* flags = ws.flags + c.bg * L.NU;
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
            const int pr = L.U / kVec;
            for (int k = lane; k < L.BG * pr; k += 32) {
              const int bb = k / pr, piece = k % pr;
              cp_async16(dst + (size_t)bb * L.ldx + (q - q0) * L.U + piece * kVec,
                         src + (size_t)bb * L.Kp + q * L.U + piece * kVec);
            }
            pending &= ~(1u << i);
            progressed = true;
          }
        }
        if (!progressed && pending && __any_sync(0xffffffffu, clock64() - start > ws.spin_limit)) {
          const int q = q0 + warp + (base + __ffs(pending) - 1) * kWarps;
          if (lane == 0) timed_out(s, q % L.NU, ld_acquire(flags + q % L.NU), want);
          *abort = 1;
        }
      }
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  }

  __device__ void timed_out(int s, int chunk, unsigned seen, unsigned want) const {
    if (atomicCAS(ws.status, 0u, 1u) == 0u) {
      ws.status[1] = (unsigned)dir;
      ws.status[2] = (unsigned)s;
      ws.status[3] = blockIdx.x;
      ws.status[4] = (unsigned)(c.bg * L.NU + chunk);
      ws.status[5] = seen;
      ws.status[6] = want;
      __threadfence();
      printf("fusedrnn: %s persistent kernel, grid tier: CTA %d timed out at step %d waiting for the chunk of CTA %d "
             "(its flag is %u, wanted %u)\n",
             dir ? "backward" : "forward", (int)blockIdx.x, s, c.bg * L.NU + chunk, seen, want);
    }
  }
};

}  // namespace fusedrnn
