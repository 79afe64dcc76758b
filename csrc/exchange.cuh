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
//                    value r + 1. Each consumer warp polls the flags of all producers of its
//                    batch group at once (a lane per producer, a warp vote), acquires once,
//                    and the CTA copies the pass's chunks into smem with 16-byte cp.async,
//                    all issued together; it waits for nothing else. K streams through smem
//                    in NP passes, two buffers deep.
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
  // the divisors of the copy loops' index math, made once before the step loop (divisors())
  struct Divisors {
    FastDiv nu, nb, pr[kMaxStages], chunk[kMaxStages];
    MatmulSplit mm[kMaxStages];  // each stage's step matmul
  } div;

  static __device__ Divisors divisors(const Layout& L, const Cta& c) {
    Divisors d;
    d.nu = FastDiv::of(L.NU);
    d.nb = FastDiv::of(max(c.nb, 1));
    for (int k = 0; k < kMaxStages; ++k) {
      const int pr = max(L.st[k].cw / kVec, 1);
      d.pr[k] = FastDiv::of(pr);
      d.chunk[k] = FastDiv::of(L.BG * pr);
      d.mm[k] = MatmulSplit::of(L.st[k], L.BG);
    }
    return d;
  }

  static constexpr int kVec = 16 / sizeof(T);

  // Tiers 1, 2: stage k's X holding round r.
  // r / nst with nst 1 or 2 and r >= 0 is a shift, not a division by a layout field; smem
  // offsets are ints (the step's puts compute this once per value)
  __device__ T* operand(int k, int r) const {
    const Stage& S = L.st[k];
    return reinterpret_cast<T*>(smem + S.off_x) + ((r >> (L.nst - 1)) & (S.nx - 1)) * L.BG * S.ldx;
  }

  // Tier 2: stage k's X as it leaves this CTA, (nseg, BG, cw).
  __device__ T* outgoing(int k) const { return reinterpret_cast<T*>(smem + L.off_stage + L.st[k].off_out); }

  // Where the values of round r that stage k consumes go: (segment g, row bb, unit u) at
  // base[g*seg + bb*row + u] (tier 1: X in smem; 2: the outgoing slice; 3: xbuf in global
  // memory; an int offset: within one round's rows). A pointwise makes it once per step, so
  // each value costs a multiply-add and a store.
  struct Target {
    T* base;
    int seg, row;
    __device__ void put(int g, int bb, int u, T v) const { base[g * seg + bb * row + u] = v; }
  };
  __device__ Target target(int r, int k) const {
    const Stage& S = L.st[k];
    if (L.tier == 1) return Target{operand(k, r) + c.rank * S.cw, S.cw * L.NU, S.ldx};
    if (L.tier == 2) return Target{outgoing(k), L.BG * S.cw, S.cw};
    T* xg = static_cast<T*>(ws.xbuf) + ((size_t)(r & 1) * L.D * L.Bp + (size_t)c.grp * L.BG) * L.Kx;
    return Target{xg + c.rank * S.cw, S.cw * L.NU, L.Kx};
  }
  // One value of round r (a pointwise that puts several takes target() once instead).
  __device__ void put(int r, int k, int g, int bb, int u, T v) const { target(r, k).put(g, bb, u, v); }

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
#pragma unroll 1
      for (int i = threadIdx.x; i < n; i += kThreads) {
        const int rest = div.nu.div(i), dst = div.nu.mod(i, rest), gb = div.pr[k].div(rest),
                  q = div.pr[k].mod(rest, gb), g = div.nb.div(gb), bb = div.nb.mod(gb, g);
        const uint4 v = *reinterpret_cast<const uint4*>(stage + (g * L.BG + bb) * S.cw + q * kVec);
        const int col = g * S.cw * L.NU + c.rank * S.cw + q * kVec;
        const uint32_t at = base + (uint32_t)((bb * S.ldx + col) * (int)sizeof(T));  // smem: int offsets
        st_cluster16(map_rank(at, dst), v);
      }
      __syncwarp();  // barrier.cluster.*.aligned: the warp arrives converged
      cluster_arrive();
    } else if (L.tier == 3) {  // a branch of its own: uniform, apart from the thread test
      if (threadIdx.x != 0) return;
      // No fence before it: the puts of every thread precede the __syncthreads above, which
      // orders them before this thread's release (bar.sync synchronises the CTA's threads),
      // and a release is cumulative in the PTX memory model: a consumer whose acquire sees
      // r + 1 sees every write that precedes the release in causality order, the other
      // threads' puts included. A __threadfence here (fence.sc) would only add a full
      // sequentially consistent fence to the step's critical path.
      st_release(ws.flags + c.grp * L.NU + c.rank, (unsigned)(r + 1));
    }
  }

  // Tiers 1 and 2, before the matmul of a stage: its round complete in operand(k, r).
  __device__ void consume() const {
    if (L.tier == 2) cluster_wait();
  }

  // Tier 3: the flag polls of one warp during one step (round r). Lane l polls producers
  // l + 32*i (i < kPollsPerLane; the plan keeps NU <= 32*kPollsPerLane), all of them at once
  // with relaxed loads, so a sweep over every producer of a pass is one L2 round trip; a
  // producer seen at r + 1 is never polled again this step (backward: one flag for its G
  // segments; several passes: one flag for all its chunks).
  static constexpr int kPollsPerLane = kMaxGridProducers / 32;
  struct Poll {
    unsigned seen = 0, inflight = 0;  // bit i: producer lane + 32*i seen / its load in v[i] not yet looked at
    unsigned v[kPollsPerLane];
  };

  // Is producer j one of chunks [q0, q1)'s (chunk q is producer q % NU)? `every`: the caller
  // knows the range holds every producer (one pass over K), a compile-time true after inlining.
  // Else by the divisor of NU made before the loop: a runtime modulo costs ~20 instructions,
  // per producer slot and call.
  __device__ bool needed(int j, int q0, int q1, bool every) const {
    if (every || q1 - q0 >= L.NU) return true;
    int d = j - div.nu.mod(q0, div.nu.div(q0));  // (j - q0) mod NU, in (-NU, NU) before the fold
    if (d < 0) d += L.NU;
    return d < q1 - q0;
  }
  // Producer slot i (lanes' producers lane + 32*i) holds producers: a uniform test of the
  // layout, so the slots past NU are skipped by whole warps (the walk is told NU).
  __device__ bool slot_has_producers(int i) const { return 32 * i < L.NU; }

  // Issue the polls of the producers of chunks [q0, q1) not seen yet; nothing waits for them here.
  __device__ void poll(Poll& pl, int q0, int q1, bool every = false) const {
    const unsigned* flags = ws.flags + c.grp * L.NU;
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int i = 0; i < kPollsPerLane; ++i) {
      if (!slot_has_producers(i)) break;
      const int j = lane + 32 * i;
      if (j < L.NU && !((pl.seen >> i) & 1u) && needed(j, q0, q1, every)) {
        pl.v[i] = ld_relaxed(flags + j);
        pl.inflight |= 1u << i;
      }
    }
  }

  // Look at the polls in flight; true (uniform across the warp) once every producer of chunks
  // [q0, q1) has been seen at round r + 1.
  __device__ bool ready(Poll& pl, int r, int q0, int q1, bool every = false) const {
    const int lane = threadIdx.x & 31;
    bool all = true;
#pragma unroll
    for (int i = 0; i < kPollsPerLane; ++i) {
      if (!slot_has_producers(i)) break;
      if (((pl.inflight >> i) & 1u) && pl.v[i] >= (unsigned)(r + 1)) pl.seen |= 1u << i;
      const int j = lane + 32 * i;
      if (j < L.NU && needed(j, q0, q1, every) && !((pl.seen >> i) & 1u)) all = false;
    }
    pl.inflight = 0;
    return __all_sync(0xffffffffu, all);
  }

  // Wait until every producer of chunks [q0, q1) is seen (re-polling only the unseen ones,
  // and those of [q0, p1) along with them), then acquire: the relaxed load that saw each flag
  // and this lane's fence.acq_rel.gpu form the acquire pattern of the producer's release,
  // and bar.warp.sync orders it before every lane's copies. A wait past ws.spin_limit
  // reports the first unseen producer and latches *abort (later waits return at once).
  __device__ void wait(Poll& pl, int r, int step, int q0, int q1, int p1, bool every = false) const {
    const long long start = clock64();
    while (!ready(pl, r, q0, q1, every)) {  // uniform across the warp
      if (__any_sync(0xffffffffu, *abort != 0)) break;
      if (__any_sync(0xffffffffu, clock64() - start > ws.spin_limit)) {
        int first = 1 << 30;  // the lowest unseen producer of the pass
        const int lane = threadIdx.x & 31;
#pragma unroll
        for (int i = 0; i < kPollsPerLane; ++i) {
          const int j = lane + 32 * i;
          if (j < L.NU && needed(j, q0, q1, every) && !((pl.seen >> i) & 1u)) first = min(first, j);
        }
        for (int off = 16; off > 0; off >>= 1) first = min(first, __shfl_xor_sync(0xffffffffu, first, off));
        if (lane == 0) timed_out(step, first, ld_acquire(ws.flags + c.grp * L.NU + first), (unsigned)(r + 1));
        *abort = 1;
        break;
      }
      poll(pl, q0, p1, every);
    }
    fence_acq_rel_gpu();
    __syncwarp();
  }

  // Tier 3: the matmul of stage k over round r streamed through smem in NP passes of CPP
  // chunks (chunk q = cw columns [q*cw, q*cw + cw) = segment q / NU of producer q % NU).
  // One sweep polls the producers of passes 0 and 1; pass p + 1 is copied before pass p's
  // matmul when its producers are already seen (always so once every producer has been),
  // else its polls stay in flight during that matmul and it is copied right after.
  // One pass (NP == 1, most plans) takes its own branch on the kernel parameter S.NP: one
  // sweep of polls, the acquire, the copy, the matmul. The branch keeps that path apart in
  // the compiled code, so the compile gate's critical-path walk, told the plan's NP, reads the
  // path a launch runs instead of both sides of the multi-pass code's branches.
  // `step` only labels a timeout report.
  __device__ void stream_multiply(int k, int r, int step, const T* A, float* part) const {
    constexpr int KE = 32 / sizeof(T);
    const Stage& S = L.st[k];
    const int nq = S.nseg * L.NU, nk = S.Kp / KE;
    T* xs = reinterpret_cast<T*>(smem + S.off_x);
    Poll pl;
    if (S.NP == 1) {
      poll(pl, 0, nq, true);
      wait(pl, r, step, 0, nq, nq, true);
      copy(k, r, 0, nq, xs);
      cp_async_wait<0>();
      __syncthreads();
      step_matmul<T>(A, xs, 0, part, S, div.mm[k], L.BG, 0, nk, false);  // also covers the zero columns [K, Kp)
      return;
    }
    T* buf[2] = {xs, xs + (size_t)L.BG * S.ldx};
    auto end = [&](int p) { return min(nq, (p + 1) * S.CPP); };
    poll(pl, 0, end(1));
    wait(pl, r, step, 0, end(0), end(1));
    copy(k, r, 0, end(0), buf[0]);
    for (int p = 0; p < S.NP; ++p) {
      const int q0 = p * S.CPP, q1 = end(p);
      // buf[(p + 1) & 1] is free: pass p - 1's matmul ended before the barrier closing its iteration
      bool next_copied = false;
      if (p + 1 < S.NP) {
        if (ready(pl, r, q1, end(p + 1))) {
          fence_acq_rel_gpu();
          __syncwarp();
          copy(k, r, q1, end(p + 1), buf[(p + 1) & 1]);
          next_copied = true;
        } else {
          poll(pl, q1, end(p + 1));  // in flight during the matmul
        }
      }
      if (next_copied) {
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      // NP > 1 has cw % KE == 0: no zero columns past K to cover
      step_matmul<T>(A, buf[p & 1], q0 * S.cw, part, S, div.mm[k], L.BG, q0 * S.cw / KE,
                     p + 1 == S.NP ? nk : q1 * S.cw / KE, p > 0);
      if (p + 1 < S.NP) {
        if (!next_copied) {
          wait(pl, r, step, q1, end(p + 1), end(p + 1));
          copy(k, r, q1, end(p + 1), buf[(p + 1) & 1]);
        }
        __syncthreads();  // buf[p & 1] is refilled by pass p + 2
      }
    }
  }

  // Copy chunks [q0, q1) of round r into dst (column (q - q0)*cw), rows [0, BG), 16 bytes per
  // cp.async, spread over all threads of the CTA (each thread's warp has acquired every
  // producer of these chunks); commits one cp.async group.
  __device__ void copy(int st, int r, int q0, int q1, T* dst) const {
    const Stage& S = L.st[st];
    const T* src = static_cast<const T*>(ws.xbuf) + ((size_t)(r & 1) * L.D * L.Bp + (size_t)c.grp * L.BG) * L.Kx;
    const int pr = S.cw / kVec, per_chunk = L.BG * pr, n = (q1 - q0) * per_chunk;
#pragma unroll 1
    for (int i = threadIdx.x; i < n; i += kThreads) {
      const int qi = div.chunk[st].div(i), k = div.chunk[st].mod(i, qi), bb = div.pr[st].div(k),
                piece = div.pr[st].mod(k, bb), q = q0 + qi;
      cp_async16(dst + (size_t)bb * S.ldx + (q - q0) * S.cw + piece * kVec,
                 src + (size_t)bb * L.Kx + q * S.cw + piece * kVec);
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
