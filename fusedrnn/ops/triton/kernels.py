"""The fused recurrence kernels: one forward and one backward for every cell (CELL constexpr;
the cells' pointwise math is in cells.py, the per-step pieces in steps.py, the tile pieces
in tiles.py).

Dimensions
    T         time steps (the loop inside the kernels): loop step s visits time t per row
    B         batch; BLOCK_B rows per program (grid axis 1), the N side of every MMA
    H         hidden units; BLOCK_N units per tile, N_TILES tiles per program (grid axis 0)
    P         width of the exchanged state h: the LSTM projection's size (PROJ), else H
    D         directions in the arrays (1 or 2; grid axis 2 holds the launch's directions);
              direction d's gates are columns [d*G*H, (d+1)*G*H) of gx, its outputs columns
              [d*P, (d+1)*P) of y; direction 1 runs each sequence backward in time
    G         gates (LSTM 4, GRU 3, RNN 1); GS gate slots stacked on the MMA's M side (4 for
              LSTM and GRU, whose fourth slot is zero; 1 for the RNN); SA fp32 values saved
              per unit and step (LSTM/GRU 4, RNN 1)
    KP        width of one piece of W_hh's contraction (over P forward, H backward): with
              RESIDENT, W_hh is loaded once as NKP pieces (tuples of tiles kept on chip);
              otherwise it is streamed from L2 in KP-wide chunks, masked at the edge (never
              padded to a power of two)
    KR        chunk of the projection's contraction (W_hr streamed; over H forward, P backward)

Each step's product is transposed: the W_hh rows of the program's units, all gate slots
stacked (GS*BLOCK_N, K), times the exchanged vector's columns (K, BLOCK_B), so hidden units
fill the MMA's M side even at batch 1 and the vector is staged once per step for all gates.
Pointwise tiles are (BLOCK_N, BLOCK_B): units down, batch across.

Layouts (chosen by config.py; constexprs N_TILES, RESIDENT, CARRY (the cta layout), BARRIER):
    grid   several programs per batch tile share its units (N_TILES tiles each); h_t
           (forward) or d_gates (backward) go through global memory, one grid barrier per step
    solo   one program per batch tile walks all units; a CTA barrier per step
    cta    one program per batch tile, one tile of all units, W_hh resident: the state stays
           in the program (no exchange through memory, no barrier)
With N_TILES == 1 the tile's own state stays in registers across steps and the inputs of a later
step (gx, or dy and the saved activations; the zoneout masks) are loaded before the step's wait:
the next step's, or in cta (nothing to wait for but those loads) the step's after it, the loop
unrolled by two (AHEAD, model.CTA_PREFETCH_AHEAD).

The projection (PROJ, LSTM): a step has two phases. Forward: the gates of the program's
units give m_t = o ⊙ tanh(c_t) (H wide; through memory, or kept in cta), then the
program's rows of h (P wide: tile i of the units and tile i of h belong to program i)
become W_hr m_t. Backward: the gradient reaching h_t (dy_t plus the recurrence, stored
as g) gives dm_t = W_hrᵀ g_t for the program's units and their gate gradients, then its
rows of dh_{t-1} = W_hhᵀ d_gates. Grid and solo meet at a barrier after each phase; cta
keeps W_hr resident beside W_hh (forward only: the LSTM backward never carries).
Zoneout and recurrent dropout (ZONE_H, ZONE_C, DROP): zoneout is pointwise after the cell
update (fwd_update / bwd_update, the next step's mask loaded before the wait; with PROJ, h's
after W_hr m_t, and the backward keeps (1 - z) g_t in p_g, adding z g_t to dh_{t-1});
with DROP the exchange buffer carries d ⊙ h_t, the h entering the product, while the state
itself (unmasked: the blends, zoneout, y, hT) lives in p_m like the LSTM's c in p_c (the
reset-before GRU: in p_m's second half, the first exchanging r ⊙ d ⊙ h; with PROJ: in p_h's
third block, since p_m holds m_t); backward multiplies
W_hhᵀ d_gates by d before adding the part of dh_{t-1} that bypasses the product (the
reset-before GRU's W_hnᵀ d_n too: d times it is the gradient of r ⊙ (d ⊙ h), its d_r as well).
Runtime flags (has_bias, has_len, reverse, save, direction 1 alone: bits of `flags`) are a
plain argument, never specialised on: one compiled kernel serves every variant. Rows past
their length change nothing (see tiles.step_rows).
With N_TILES > 1 each tile's other loads (its masks, its bias in 16 bits, dh and the saved
values of the backward's phases) are written before its product's loop and pass through
tiles.issued after it: a load written after the loop waits for the loop's last chunk, and a
value converted to the product's layout where it is loaded holds back the loop's first loads,
one more dependent round trip per tile either way (tests/test_critical_path.py).
"""
import triton
import triton.language as tl

from .steps import (CTA_AHEAD, bwd_inputs, bwd_saved, bwd_update, contract_bwd, contract_fwd, fwd_inputs, fwd_update,
                    load_dy, program_rows, project_out, reset_bwd, reset_state, resident_w_bwd, resident_w_fwd,
                    resident_w_gates, store_grad_h, unit_tile, with_slot2, zone_masks)
from .tiles import issued, load_slots, mma, release, release_slots, stacked_rows, step_rows, sync, w_rows


@triton.jit(do_not_specialize=["T", "flags", "spin_limit"])
def recurrence_fwd_kernel(
    p_gx,     # (T, B, D*G*H) input projection x W_ihᵀ + b_ih, input dtype
    p_w,      # (D, G*H, P) W_hh, input dtype
    p_bias,   # (D, G*H) b_hh, input dtype (read only if has_bias)
    p_wr,     # (D, P, H) W_hr, the LSTM projection, input dtype (read only with PROJ)
    p_len,    # (B,) int32 lengths (read only if has_len)
    p_y,      # (T, B, D*P) out, input dtype
    p_h,      # (D, 2, B, P) fp32: [d, 0] = h0 on entry, [d, T % 2] = hT on exit; the exchange buffer
              # (PROJ with DROP: (D, 3, B, P), [d, 2] the unmasked state)
    p_c,      # (D, B, H) fp32 LSTM cell state: c0 on entry, cT on exit (unused by other cells)
    p_m,      # PROJ: fp32 m_t, (D, T, B, H) if save (kept for dW_hr), else (D, B, H): the phases' exchange;
              # RB with DROP: (D, 2, B, H), [d, 0] the phases' exchange, [d, 1] the unmasked state
    p_acts,   # (D, T, B, SA*H) fp32 saved activations (written if save)
    p_state,  # (D, T, B, H) fp32 saved state entering each step: LSTM c, GRU h (written if save)
    p_sync,   # (directions in the launch * batch tiles + 1,) int32 zeros: barrier counters, then the timeout flag
    p_zh,     # ZONE_H: (T, B, D*P) fp32 zoneout mask of h (like y)
    p_zc,     # ZONE_C: (T, B, D*H) fp32 zoneout mask of the LSTM's c
    p_dm,     # DROP: (D, B, P) fp32 recurrent-dropout mask (then p_m holds the unmasked state, (D, B, H))
    T, B, H, P, D,
    flags,  # runtime bits: HAS_BIAS 1, HAS_LEN 2, REVERSE 4, SAVE 8, DIR1 16 (launch.FLAG_*)
    spin_limit,  # barrier polls per step before the wait gives up (latched)
    CELL: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, KP: tl.constexpr, NKP: tl.constexpr,
    KR: tl.constexpr, N_TILES: tl.constexpr, RESIDENT: tl.constexpr, CARRY: tl.constexpr, BARRIER: tl.constexpr,
    PROJ: tl.constexpr, PREC: tl.constexpr, INTERP: tl.constexpr,
    ZONE_H: tl.constexpr = False, ZONE_C: tl.constexpr = False, DROP: tl.constexpr = False,
    SPLIT: tl.constexpr = False,  # the resident pieces' product split in K over the warps (steps.contract_split)
):
    G: tl.constexpr = 4 if CELL == 0 else 1 if (CELL == 2 or CELL == 3) else 3
    GS: tl.constexpr = 1 if G == 1 else 4
    SA: tl.constexpr = 1 if G == 1 else 4
    RB: tl.constexpr = CELL == 4  # GRU, reset gate before the product: a second phase per step
    NS: tl.constexpr = 2 if (PROJ or RB) else 1  # barriers per step
    BLOCK_P: tl.constexpr = KP if (CARRY and PROJ) else BLOCK_N  # rows of h per tile
    NM: tl.constexpr = 2 if (RB and DROP) else 1  # (B, H) blocks of p_m per direction
    NH: tl.constexpr = 3 if (PROJ and DROP) else 2  # (B, P) blocks of p_h per direction
    ZH_CELL: tl.constexpr = ZONE_H and not PROJ  # zoneout of h in the cell's update (PROJ: after W_hr)
    AHEAD: tl.constexpr = CTA_AHEAD if CARRY else 1  # steps from the single-tile inputs' load to their use
    PLAIN: tl.constexpr = INTERP or AHEAD == 1  # those inputs converted as loaded (tiles.hold)
    W16: tl.constexpr = p_w.dtype.element_ty != tl.float32
    if not PROJ:  # the state is H wide: let the compiler see it
        P = H
    has_bias, reverse, save, d, o_b, m_b, b_len, p_cnt, p_err = program_rows(p_len, p_sync, flags, T, B, D, BLOCK_B)
    p_zh += d * P
    p_zc += d * H
    p_dm += d.to(tl.int64) * B * P
    # direction d's slices; gx and y interleave the directions along their rows
    p_gx += d * (G * H)
    p_w += d * (G * H) * P
    p_bias += d * (G * H)
    p_wr += d * P * H
    p_y += d * P
    d64 = d.to(tl.int64)
    p_h += d64 * NH * B * P
    p_c += d64 * B * H
    if PROJ:
        p_m += d64 * tl.where(save, T, 1) * B * H
    else:  # RB: the phases' exchange of r ⊙ h; DROP: the unmasked state (RB: both)
        p_m += d64 * NM * B * H
    # DROP: the unmasked state, (B, P): p_h's third block with PROJ (p_m holds m_t), else p_m's last
    p_st = p_m + (NM - 1) * B * H
    if PROJ:
        p_st = p_h + 2 * B * P
    p_acts += d64 * T * B * (SA * H)
    p_state += d64 * T * B * H
    s_gx, s_y = D * (G * H), D * P
    o_rh, o_rp = o_b.to(tl.int64) * H, o_b.to(tl.int64) * P
    i_n, n_sync = tl.program_id(0), tl.num_programs(0)
    budget = spin_limit
    zero = tl.zeros((GS * BLOCK_N, BLOCK_B), tl.float32)
    zero_p = tl.zeros((BLOCK_P, BLOCK_B), tl.float32)
    if N_TILES == 1:
        n0 = i_n * BLOCK_N
        o_n, m, o_tile = unit_tile(i_n, o_rh, m_b, H, BLOCK_N)
        o_p, m_p, o_ptile = unit_tile(i_n, o_rp, m_b, P, BLOCK_P)  # the program's rows of h (== o_n without PROJ)
        h = tl.load(p_h + o_ptile, mask=m_p, other=0.0)
        dm = h
        if DROP:  # the exchange holds d ⊙ h; the state itself comes from p_st
            h = tl.load(p_st + o_ptile, mask=m_p, other=0.0)
            dm = tl.load(p_dm + o_ptile, mask=m_p, other=0.0)
        c = h
        if CELL == 0:
            c = tl.load(p_c + o_tile, mask=m, other=0.0)
        bias = stacked_rows(p_bias, n0, H, G, GS, BLOCK_N, has_bias)
        ws = 0
        if RESIDENT:
            ws = resident_w_fwd(p_w, n0, H, P, G, GS, BLOCK_N, KP, NKP, SPLIT)
        wr = 0
        if PROJ and CARRY:
            wr = w_rows(p_wr, 0, 0, P, H, 1, 1, BLOCK_P, BLOCK_N)  # all of W_hr: (BLOCK_P, BLOCK_N)
        # the inputs that do not depend on h (gx, the zoneout masks: zh on h's rows, P of them with PROJ)
        # are loaded AHEAD steps before their use, held as loaded (tiles.hold) and released at it.
        # cta (AHEAD 2): buffer a holds step s's, b step s+1's, and step s loads step s+2's; the
        # loop is unrolled by two, so the buffers' rotation is a renaming, not a register move (a
        # move of a load still in flight waits for it like a use). The other layouts wait for the
        # exchange each step, which the next step's load has had a whole step to beat: one ahead
        xa0, xa1, xa2, xa3, zha, zca = fwd_inputs(p_gx, p_zh, p_zc, 0, T, b_len, o_b, m_b, o_n, m, o_p, m_p, B, H,
                                                  G, s_gx, s_y, D * H, reverse, ZONE_H, ZONE_C, PLAIN)
        xb0, xb1, xb2, xb3, zhb, zcb = xa0, xa1, xa2, xa3, zha, zca
        if AHEAD == 2:
            xb0, xb1, xb2, xb3, zhb, zcb = fwd_inputs(p_gx, p_zh, p_zc, 1, T, b_len, o_b, m_b, o_n, m, o_p, m_p, B,
                                                      H, G, s_gx, s_y, D * H, reverse, ZONE_H, ZONE_C, PLAIN)
        for s in tl.range(0, T, loop_unroll_factor=AHEAD):
            o_r, act = step_rows(s, b_len, o_b, m_b, B, reverse)
            x0, x1, x2, x3 = release_slots(xa0, xa1, xa2, xa3, p_gx.dtype.element_ty, G, PLAIN)
            zh, zc = zha, zca
            if ZONE_H:
                zh = release(zha, tl.float32, PLAIN)
            if ZONE_C:
                zc = release(zca, tl.float32, PLAIN)
            if CARRY:  # the whole state is this tile: it is the product's operand as it is (times d)
                acc = mma(ws[0], h * dm if DROP else h, zero, PREC, INTERP)
            else:
                acc = contract_fwd(zero, p_h + (s % 2) * B * P, o_rp, m_b, p_w, ws, n0, H, P, G, GS, BLOCK_N, KP,
                                   NKP, RESIDENT, PREC, INTERP, False, SPLIT)
            if RB:  # r first, then the n gate's product over r ⊙ h of all units
                rh = reset_state(acc, bias, x0, h * dm if DROP else h, act, m, GS, BLOCK_N, BLOCK_B)
                if CARRY:
                    acc_n = mma(ws[0], rh, zero, PREC, INTERP)
                else:
                    tl.store(p_m + o_tile, rh, mask=m)
                    budget = sync(p_cnt, p_err, (NS * s + 1) * n_sync, budget, BARRIER, INTERP)
                    acc_n = contract_fwd(zero, p_m, o_rh, m_b, p_w, ws, n0, H, P, G, GS, BLOCK_N, KP, NKP, RESIDENT,
                                         PREC, INTERP, False, SPLIT)
                acc = with_slot2(acc, acc_n, GS, BLOCK_N)
            h_in = h
            if PROJ:  # the LSTM reads c, not h; with PROJ h has P rows
                h_in = c
            u, c = fwd_update(CELL, acc, bias, x0, x1, x2, x3, h_in, c, act, o_r, o_n, m, p_y, o_r * s_y, p_acts,
                              p_state, H, save, GS, SA, BLOCK_N, BLOCK_B, CARRY, PROJ, INTERP, zh, zc, ZH_CELL, ZONE_C)
            if AHEAD == 2:
                xa0, xa1, xa2, xa3, zha, zca = xb0, xb1, xb2, xb3, zhb, zcb
                xb0, xb1, xb2, xb3, zhb, zcb = fwd_inputs(p_gx, p_zh, p_zc, s + 2, T, b_len, o_b, m_b, o_n, m, o_p,
                                                          m_p, B, H, G, s_gx, s_y, D * H, reverse, ZONE_H, ZONE_C,
                                                          PLAIN)
            else:
                xa0, xa1, xa2, xa3, zha, zca = fwd_inputs(p_gx, p_zh, p_zc, s + 1, T, b_len, o_b, m_b, o_n, m, o_p,
                                                          m_p, B, H, G, s_gx, s_y, D * H, reverse, ZONE_H, ZONE_C,
                                                          PLAIN)
            if PROJ:
                o_m = tl.where(save, o_r * H, o_rh)
                if CARRY:
                    if save:
                        tl.store(p_m + o_m[None, :] + o_n[:, None], u, mask=m)
                    hp = mma(wr, u, zero_p, PREC, INTERP)
                else:
                    tl.store(p_m + o_m[None, :] + o_n[:, None], u, mask=m)
                    budget = sync(p_cnt, p_err, (NS * s + 1) * n_sync, budget, BARRIER, INTERP)
                    hp = contract_fwd(zero_p, p_m, o_m, m_b, p_wr, 0, n0, P, H, 1, 1, BLOCK_N, KR, 1, False, PREC,
                                      INTERP, True)
                if ZONE_H:  # zoneout of h = W_hr m_t, from the unmasked h_{t-1}
                    hp = zh * h + (1.0 - zh) * hp
                h = project_out(hp, h, act, o_p, m_p, p_y, o_r * s_y, CARRY, INTERP)
            else:
                h = u
            if not CARRY:
                tl.store(p_h + ((s + 1) % 2) * B * P + o_ptile, h * dm if DROP else h, mask=m_p)
                budget = sync(p_cnt, p_err, (NS * s + NS) * n_sync, budget, BARRIER, INTERP)
        tl.store(p_h + (T % 2) * B * P + o_ptile, h, mask=m_p)
        if DROP:  # hT, where the launcher reads it with DROP (as every layout leaves it)
            tl.store(p_st + o_ptile, h, mask=m_p)
        if CELL == 0:
            tl.store(p_c + o_tile, c, mask=m)
    else:
        for s in range(T):
            o_r, act = step_rows(s, b_len, o_b, m_b, B, reverse)
            p_hcur = p_h + (s % 2) * B * P
            p_hnext = p_h + ((s + 1) % 2) * B * P
            o_m = tl.where(save, o_r * H, o_rh)
            if RB:  # the first phase: r ⊙ h of every tile, exchanged before any n gate
                for j in range(N_TILES):
                    n0 = (i_n * N_TILES + j) * BLOCK_N
                    o_n, m, o_tile = unit_tile(i_n * N_TILES + j, o_rh, m_b, H, BLOCK_N)
                    h = tl.load(p_hcur + o_tile, mask=m, other=0.0, cache_modifier=".cg")
                    x_r = load_slots(p_gx, o_r * s_gx, o_n, m, H, 1)[0]
                    acc = contract_fwd(zero, p_hcur, o_rp, m_b, p_w, 0, n0, H, P, G, GS, BLOCK_N, KP, NKP, False,
                                       PREC, INTERP, False)
                    rh = reset_state(acc, stacked_rows(p_bias, n0, H, G, GS, BLOCK_N, has_bias), x_r, h, act, m, GS,
                                     BLOCK_N, BLOCK_B)
                    tl.store(p_m + o_tile, rh, mask=m)
                budget = sync(p_cnt, p_err, (NS * s + 1) * n_sync, budget, BARRIER, INTERP)
            for j in range(N_TILES):
                n0 = (i_n * N_TILES + j) * BLOCK_N
                o_n, m, o_tile = unit_tile(i_n * N_TILES + j, o_rh, m_b, H, BLOCK_N)
                h = tl.zeros((BLOCK_N, BLOCK_B), tl.float32)
                if DROP and not PROJ:  # the exchange holds d ⊙ h; the tile's state itself is in p_st
                    h = tl.load(p_st + o_tile, mask=m, other=0.0)
                elif not PROJ:  # h is H wide: the tile's own units
                    h = tl.load(p_hcur + o_tile, mask=m, other=0.0, cache_modifier=".cg")
                c = h
                if CELL == 0:
                    c = tl.load(p_c + o_tile, mask=m, other=0.0)
                x0, x1, x2, x3 = load_slots(p_gx, o_r * s_gx, o_n, m, H, G)
                # the masks beside the inputs, before the product's loop: after it, each is one more
                # dependent round trip per tile (the LSTM B256·H512 bf16 step took 17 against 13 plain)
                zh, zc = zone_masks(p_zh, p_zc, o_r, o_n, m, s_y, D * H, ZH_CELL, ZONE_C)
                dm = 1.0
                if DROP and not PROJ:
                    dm = tl.load(p_dm + o_tile, mask=m, other=0.0)
                if W16:  # the bias too (fp32's tf32x3 tiles already spill: read after the product, as before)
                    bias = stacked_rows(p_bias, n0, H, G, GS, BLOCK_N, has_bias)
                # with a projection, several tiles' W_hh in two slots spill (B256·H512·P128, sm_90): rotated
                acc = contract_fwd(zero, p_hcur, o_rp, m_b, p_w, 0, n0, H, P, G, GS, BLOCK_N, KP, NKP, False, PREC,
                                   INTERP, PROJ)
                if RB:  # the first phase's product again (r, z), beside the n gate's over r ⊙ h
                    acc = with_slot2(acc, contract_fwd(zero, p_m, o_rh, m_b, p_w, 0, n0, H, P, G, GS, BLOCK_N, KP, NKP,
                                                       False, PREC, INTERP, False), GS, BLOCK_N)
                if W16:
                    bias = issued(bias, INTERP)
                else:
                    bias = stacked_rows(p_bias, n0, H, G, GS, BLOCK_N, has_bias)
                u, c = fwd_update(CELL, acc, bias, x0, x1, x2, x3,
                                  h, c, act, o_r, o_n, m, p_y, o_r * s_y, p_acts, p_state, H, save, GS, SA, BLOCK_N,
                                  BLOCK_B, False, PROJ, INTERP, zh, zc, ZH_CELL, ZONE_C)
                if PROJ:
                    tl.store(p_m + o_m[None, :] + o_n[:, None], u, mask=m)
                elif DROP:
                    tl.store(p_hnext + o_tile, u * dm, mask=m)
                    tl.store(p_st + o_tile, u, mask=m)
                else:
                    tl.store(p_hnext + o_tile, u, mask=m)
                if CELL == 0:
                    tl.store(p_c + o_tile, c, mask=m)
            budget = sync(p_cnt, p_err, (NS * s + (2 if RB else 1)) * n_sync, budget, BARRIER, INTERP)
            if PROJ:
                for j in range(N_TILES):  # the program's rows of h_t = W_hr m_t
                    o_p, m_p, o_ptile = unit_tile(i_n * N_TILES + j, o_rp, m_b, P, BLOCK_N)
                    zh = zone_masks(p_zh, p_zc, o_r, o_p, m_p, s_y, D * H, ZONE_H, False)[0]
                    dm = 1.0
                    if DROP:  # the exchange holds d ⊙ h; the state itself is in p_st
                        dm = tl.load(p_dm + o_ptile, mask=m_p, other=0.0)
                        h = tl.load(p_st + o_ptile, mask=m_p, other=0.0)
                    else:
                        h = tl.load(p_hcur + o_ptile, mask=m_p, other=0.0, cache_modifier=".cg")
                    hp = contract_fwd(zero_p, p_m, o_m, m_b, p_wr, 0, (i_n * N_TILES + j) * BLOCK_N, P, H, 1, 1,
                                      BLOCK_N, KR, 1, False, PREC, INTERP, True)
                    # h and the mask reach the product's layout only now (through issued): converted
                    # where they are loaded, each conversion would hold back the product's loads
                    h = issued(h, INTERP)
                    if ZONE_H:  # zoneout of h = W_hr m_t, from the unmasked h_{t-1}
                        zh = issued(zh, INTERP)
                        hp = zh * h + (1.0 - zh) * hp
                    h = project_out(hp, h, act, o_p, m_p, p_y, o_r * s_y, False, INTERP)
                    if DROP:
                        tl.store(p_hnext + o_ptile, h * issued(dm, INTERP), mask=m_p)
                        tl.store(p_st + o_ptile, h, mask=m_p)
                    else:
                        tl.store(p_hnext + o_ptile, h, mask=m_p)
                budget = sync(p_cnt, p_err, (NS * s + 2) * n_sync, budget, BARRIER, INTERP)


@triton.jit(do_not_specialize=["T", "flags", "spin_limit"])
def recurrence_bwd_kernel(
    p_dy,     # (T, B, D*P) gradient of y, input dtype
    p_w,      # (D, G*H, P) W_hh, input dtype
    p_wr,     # (D, P, H) W_hr, input dtype (read only with PROJ)
    p_len,    # (B,) int32 lengths (read only if has_len)
    p_acts,   # (D, T, B, SA*H) fp32 saved activations
    p_state,  # (D, T, B, H) fp32 saved state entering each step (LSTM c, GRU h)
    p_dgh,    # (T, B, D*G*H) fp32 out: gradients of the pre-activations fed by h W_hhᵀ + b_hh; the exchange
    p_dgx,    # (T, B, D*G*H) out, input dtype: those fed by gx (written with WRITE_DGX)
    p_g,      # PROJ: (D, T, B, P) fp32 out: the gradient reaching h_t, 0 at padded steps; the exchange
    p_dh,     # (D, B, P) fp32: dhT on entry, dh0 on exit
    p_dc,     # (D, B, H) fp32 LSTM: dcT on entry, dc0 on exit
    p_sync,   # (directions in the launch * batch tiles + 1,) int32 zeros: barrier counters, then the timeout flag
    p_zh,     # ZONE_H: (T, B, D*P) fp32 zoneout mask of h (like dy)
    p_zc,     # ZONE_C: (T, B, D*H) fp32 zoneout mask of the LSTM's c
    p_dm,     # DROP: (D, B, P) fp32 recurrent-dropout mask
    T, B, H, P, D,
    flags,  # runtime bits: HAS_LEN 2, REVERSE 4, DIR1 16 (launch.FLAG_*)
    spin_limit,  # barrier polls per step before the wait gives up (latched)
    CELL: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, KP: tl.constexpr, NKP: tl.constexpr,
    KR: tl.constexpr, N_TILES: tl.constexpr, RESIDENT: tl.constexpr, CARRY: tl.constexpr, BARRIER: tl.constexpr,
    PROJ: tl.constexpr, WRITE_DGX: tl.constexpr, PREC: tl.constexpr, INTERP: tl.constexpr,
    ZONE_H: tl.constexpr = False, ZONE_C: tl.constexpr = False, DROP: tl.constexpr = False,
    SPLIT: tl.constexpr = False,  # unused: a backward's resident pieces are split whenever NKP > 1
):
    G: tl.constexpr = 4 if CELL == 0 else 1 if (CELL == 2 or CELL == 3) else 3
    SA: tl.constexpr = 1 if G == 1 else 4
    RB: tl.constexpr = CELL == 4  # GRU, reset gate before the product: d_r needs W_hnᵀ d_n of all units first
    GH: tl.constexpr = 2 if RB else G  # the gates whose W_hh block dh_{t-1} contracts (RB: n's goes through r ⊙ h)
    NS: tl.constexpr = 2 if (PROJ or RB) else 1  # barriers per step
    tl.static_assert(not (CARRY and PROJ), "the LSTM backward never carries")
    ZH_CELL: tl.constexpr = ZONE_H and not PROJ  # zoneout of h in the cell's update (PROJ: after W_hr)
    AHEAD: tl.constexpr = CTA_AHEAD if CARRY else 1  # steps from the single-tile inputs' load to their use
    PLAIN: tl.constexpr = INTERP or AHEAD == 1  # those inputs converted as loaded (tiles.hold)
    if not PROJ:  # the state is H wide: let the compiler see it
        P = H
    _, reverse, _, d, o_b, m_b, b_len, p_cnt, p_err = program_rows(p_len, p_sync, flags, T, B, D, BLOCK_B)
    p_zh += d * P
    p_zc += d * H
    p_dm += d.to(tl.int64) * B * P
    p_dy += d * P
    p_w += d * (G * H) * P
    p_wr += d * P * H
    p_dgh += d * (G * H)
    p_dgx += d * (G * H)
    d64 = d.to(tl.int64)
    p_acts += d64 * T * B * (SA * H)
    p_state += d64 * T * B * H
    p_g += d64 * T * B * P
    p_dh += d64 * B * P
    p_dc += d64 * B * H
    s_g, s_y = D * (G * H), D * P
    o_rh, o_rp = o_b.to(tl.int64) * H, o_b.to(tl.int64) * P
    i_n, n_sync = tl.program_id(0), tl.num_programs(0)
    budget = spin_limit
    zero = tl.zeros((BLOCK_N, BLOCK_B), tl.float32)
    if N_TILES == 1:
        o_n, m, o_tile = unit_tile(i_n, o_rh, m_b, H, BLOCK_N)
        o_p, m_p, o_ptile = unit_tile(i_n, o_rp, m_b, P, BLOCK_N)  # the program's rows of dh (== o_n without PROJ)
        dh = tl.load(p_dh + o_ptile, mask=m_p, other=0.0)
        dm = dh
        if DROP:
            dm = tl.load(p_dm + o_ptile, mask=m_p, other=0.0)
        dc = dh
        if CELL == 0:
            dc = tl.load(p_dc + o_tile, mask=m, other=0.0)
        ws = 0
        wn = 0
        if CARRY:
            ws = resident_w_gates(p_w, o_p, P, H, G, KP)
        elif RESIDENT:  # one contraction over the rows of the GH gates dh_{t-1} takes (RB: r, z first)
            ws = resident_w_bwd(p_w, o_p, P, GH * H, KP, NKP)
            if RB:  # the n gate's rows alone, for the second phase
                wn = resident_w_bwd(p_w + 2 * H * P, o_p, P, H, KP, NKP)
        g = dh
        zg = 0.0
        if PROJ:  # g: the gradient reaching h_t; p_g its part through the cell, (1 - zh_t) g (ZONE_H)
            dy = load_dy(p_dy, T - 1, b_len, o_b, m_b, o_p, m_p, B, s_y, reverse)
            if ZONE_H:
                zg = load_dy(p_zh, T - 1, b_len, o_b, m_b, o_p, m_p, B, s_y, reverse)
            g = dh + dy
            store_grad_h(p_g, (1.0 - zg) * dh, (1.0 - zg) * dy, T - 1, b_len, o_b, m_b, o_p, m_p, B, P, reverse)
            budget = sync(p_cnt, p_err, n_sync, budget, BARRIER, INTERP)
        # the inputs that do not depend on dh (dy, the saved activations and state, the zoneout
        # masks) are loaded AHEAD steps before their use, as the forward's: buffer a holds loop
        # step s's, b step s-1's (cta), and step s loads step s-AHEAD's
        dya, sa0, sa1, sa2, sa3, sta, zha, zca = bwd_inputs(p_dy, p_acts, p_state, p_zh, p_zc, T - 1, b_len, o_b, m_b,
                                                            o_n, m, B, H, s_y, D * H, reverse, CELL, SA, PROJ,
                                                            ZH_CELL, ZONE_C, PLAIN)
        dyb, sb0, sb1, sb2, sb3, stb, zhb, zcb = dya, sa0, sa1, sa2, sa3, sta, zha, zca
        if AHEAD == 2:
            dyb, sb0, sb1, sb2, sb3, stb, zhb, zcb = bwd_inputs(p_dy, p_acts, p_state, p_zh, p_zc, T - 2, b_len, o_b,
                                                                m_b, o_n, m, B, H, s_y, D * H, reverse, CELL, SA, PROJ,
                                                                ZH_CELL, ZONE_C, PLAIN)
        for r in tl.range(0, T, loop_unroll_factor=AHEAD):
            s = T - 1 - r
            o_r, act = step_rows(s, b_len, o_b, m_b, B, reverse)
            dy, st = release(dya, p_dy.dtype.element_ty, PLAIN), sta
            if CELL < 2 or CELL == 4:  # the saved state (the RNN has none)
                st = release(sta, tl.float32, PLAIN)
            s0, s1, s2, s3 = release_slots(sa0, sa1, sa2, sa3, tl.float32, SA, PLAIN)
            zh, zc = zha, zca
            if ZH_CELL:
                zh = release(zha, tl.float32, PLAIN)
            if ZONE_C:
                zc = release(zca, tl.float32, PLAIN)
            u = dh
            if PROJ:  # dm_t of the program's units from all of g_t
                u = contract_bwd(zero, p_g, o_r * P, m_b, p_wr, 0, o_n, H, P, 1, KR, 1, False, PREC, INTERP)
            d0, d1, d2, d3, dhx, dc = bwd_update(CELL, u, dc, dy, s0, s1, s2, s3, st, act, o_r, o_n, m, p_dgh,
                                                 p_dgx, s_g, H, G, WRITE_DGX, CARRY, INTERP, zh, zc, ZH_CELL, ZONE_C)
            r_t, h_t = s0, st  # RB's second phase needs this step's r and h_{t-1}
            if AHEAD == 2:
                dya, sa0, sa1, sa2, sa3, sta, zha, zca = dyb, sb0, sb1, sb2, sb3, stb, zhb, zcb
                dyb, sb0, sb1, sb2, sb3, stb, zhb, zcb = bwd_inputs(p_dy, p_acts, p_state, p_zh, p_zc, s - 2, b_len,
                                                                    o_b, m_b, o_n, m, B, H, s_y, D * H, reverse, CELL,
                                                                    SA, PROJ, ZH_CELL, ZONE_C, PLAIN)
            else:
                dya, sa0, sa1, sa2, sa3, sta, zha, zca = bwd_inputs(p_dy, p_acts, p_state, p_zh, p_zc, s - 1, b_len,
                                                                    o_b, m_b, o_n, m, B, H, s_y, D * H, reverse, CELL,
                                                                    SA, PROJ, ZH_CELL, ZONE_C, PLAIN)
            if CARRY:  # the gate gradients of all units are this tile: the product's operands as they are
                if RB:  # with DROP, d ⊙ W_hnᵀ d_n: the gradient of r ⊙ (d ⊙ h)
                    g = mma(ws[2], d2, zero, PREC, INTERP)
                    d0, dhx = reset_bwd(g * dm if DROP else g, r_t, h_t, dhx, act, m, o_r, o_n, p_dgh, p_dgx, s_g,
                                        WRITE_DGX, CARRY, INTERP)
                dh = mma(ws[0], d0, zero if DROP else dhx, PREC, INTERP)
                if G > 1:
                    dh = mma(ws[1], d1, dh, PREC, INTERP)
                    if not RB:
                        dh = mma(ws[2], d2, dh, PREC, INTERP)
                if G > 3:
                    dh = mma(ws[3], d3, dh, PREC, INTERP)
                if DROP:  # the product took d ⊙ h_{t-1}
                    dh = dhx + dm * dh
            elif PROJ:
                dy_p = load_dy(p_dy, s - 1, b_len, o_b, m_b, o_p, m_p, B, s_y, reverse)
                zg_p = zg
                if ZONE_H:
                    zg_p = load_dy(p_zh, s - 1, b_len, o_b, m_b, o_p, m_p, B, s_y, reverse)
                budget = sync(p_cnt, p_err, (NS * r + 2) * n_sync, budget, BARRIER, INTERP)
                acc = contract_bwd(zero, p_dgh, o_r * s_g, m_b, p_w, ws, o_p, P, H, G, KP, NKP, RESIDENT, PREC,
                                   INTERP)
                if DROP:  # the product took d ⊙ h_{t-1}
                    acc = acc * dm
                # the LSTM's h reaches the next step through the gates, and with zoneout zh_t of g_t directly
                dh = tl.where(act[None, :], acc + zg * g if ZONE_H else acc, dh)
                g, zg = dh + dy_p, zg_p
                store_grad_h(p_g, (1.0 - zg) * dh, (1.0 - zg) * dy_p, s - 1, b_len, o_b, m_b, o_p, m_p, B, P, reverse)
                budget = sync(p_cnt, p_err, (NS * r + 3) * n_sync, budget, BARRIER, INTERP)
            else:
                budget = sync(p_cnt, p_err, (NS * r + 1) * n_sync, budget, BARRIER, INTERP)
                if RB:  # d_r from W_hnᵀ d_n of all units, exchanged before the r and z gates' product
                    g = contract_bwd(zero, p_dgh + 2 * H, o_r * s_g, m_b, p_w + 2 * H * P, wn, o_p, P, H, 1, KP, NKP,
                                     RESIDENT, PREC, INTERP)
                    if DROP:  # the gradient of r ⊙ (d ⊙ h)
                        g = g * dm
                    dhx = reset_bwd(g, r_t, h_t, dhx, act, m, o_r, o_n, p_dgh, p_dgx, s_g, WRITE_DGX, False, INTERP)[1]
                    budget = sync(p_cnt, p_err, (NS * r + 2) * n_sync, budget, BARRIER, INTERP)
                if DROP:  # the product took d ⊙ h_{t-1}
                    dh = dhx + dm * contract_bwd(zero, p_dgh, o_r * s_g, m_b, p_w, ws, o_p, P, H, GH, KP, NKP, RESIDENT,
                                                 PREC, INTERP)
                else:
                    dh = contract_bwd(dhx, p_dgh, o_r * s_g, m_b, p_w, ws, o_p, P, H, GH, KP, NKP, RESIDENT, PREC,
                                      INTERP)
        tl.store(p_dh + o_ptile, dh, mask=m_p)
        if CELL == 0:
            tl.store(p_dc + o_tile, dc, mask=m)
    else:
        if PROJ:  # g of the last step: the gradient reaching h_T
            for j in range(N_TILES):
                o_p, m_p, o_ptile = unit_tile(i_n * N_TILES + j, o_rp, m_b, P, BLOCK_N)
                dy = load_dy(p_dy, T - 1, b_len, o_b, m_b, o_p, m_p, B, s_y, reverse)
                zg = 0.0  # p_g: the part of g through the cell, (1 - zh_t) g (ZONE_H)
                if ZONE_H:
                    zg = load_dy(p_zh, T - 1, b_len, o_b, m_b, o_p, m_p, B, s_y, reverse)
                store_grad_h(p_g, (1.0 - zg) * tl.load(p_dh + o_ptile, mask=m_p, other=0.0), (1.0 - zg) * dy, T - 1,
                             b_len, o_b, m_b, o_p, m_p, B, P, reverse)
            budget = sync(p_cnt, p_err, n_sync, budget, BARRIER, INTERP)
        for r in range(T):
            s = T - 1 - r
            o_r, act = step_rows(s, b_len, o_b, m_b, B, reverse)
            for j in range(N_TILES):  # pointwise: d_gates of the program's units
                o_n, m, o_tile = unit_tile(i_n * N_TILES + j, o_rh, m_b, H, BLOCK_N)
                if PROJ:
                    dh = contract_bwd(zero, p_g, o_r * P, m_b, p_wr, 0, o_n, H, P, 1, KR, 1, False, PREC, INTERP)
                else:
                    dh = tl.load(p_dh + o_tile, mask=m, other=0.0)
                dc = dh
                if CELL == 0:
                    dc = tl.load(p_dc + o_tile, mask=m, other=0.0)
                dy, s0, s1, s2, s3, st = bwd_saved(p_dy, p_acts, p_state, s, b_len, o_b, m_b, o_n, m, B, H, s_y,
                                                   reverse, CELL, SA, PROJ)
                zh, zc = zone_masks(p_zh, p_zc, o_r, o_n, m, s_y, D * H, ZH_CELL, ZONE_C)
                d0, d1, d2, d3, dh, dc = bwd_update(CELL, dh, dc, dy, s0, s1, s2, s3, st, act, o_r, o_n, m, p_dgh,
                                                    p_dgx, s_g, H, G, WRITE_DGX, False, INTERP, zh, zc, ZH_CELL, ZONE_C)
                if not PROJ:
                    tl.store(p_dh + o_tile, dh, mask=m)
                if CELL == 0:
                    tl.store(p_dc + o_tile, dc, mask=m)
            budget = sync(p_cnt, p_err, (NS * r + (1 if RB else NS)) * n_sync, budget, BARRIER, INTERP)
            if RB:  # the second phase: d_r of every tile from W_hnᵀ d_n, exchanged before the contraction
                for j in range(N_TILES):
                    o_n, m, o_tile = unit_tile(i_n * N_TILES + j, o_rh, m_b, H, BLOCK_N)
                    # the tile's loads before the product's loop, in its layout only after it (as below)
                    saved_t = bwd_saved(p_dy, p_acts, p_state, s, b_len, o_b, m_b, o_n, m, B, H, s_y, reverse, CELL,
                                        SA, PROJ)  # its r (s0) and h_{t-1} (st)
                    dh = tl.load(p_dh + o_tile, mask=m, other=0.0)
                    dm = 1.0
                    if DROP:
                        dm = tl.load(p_dm + o_tile, mask=m, other=0.0)
                    g = contract_bwd(zero, p_dgh + 2 * H, o_r * s_g, m_b, p_w + 2 * H * P, 0, o_n, P, H, 1, KP, NKP,
                                     False, PREC, INTERP)
                    if DROP:  # the gradient of r ⊙ (d ⊙ h)
                        g = g * issued(dm, INTERP)
                    dh = reset_bwd(g, issued(saved_t[1], INTERP), issued(saved_t[5], INTERP), issued(dh, INTERP), act,
                                   m, o_r, o_n, p_dgh, p_dgx, s_g, WRITE_DGX, False, INTERP)[1]
                    tl.store(p_dh + o_tile, dh, mask=m)
                budget = sync(p_cnt, p_err, (NS * r + 2) * n_sync, budget, BARRIER, INTERP)
            for j in range(N_TILES):  # contraction: the program's rows of dh_{t-1}
                o_p, m_p, o_ptile = unit_tile(i_n * N_TILES + j, o_rp, m_b, P, BLOCK_N)
                # every load of the tile before the product's loop, each value reaching the product's
                # layout only after it (issued): a load after the loop, or a conversion where it is
                # loaded, is one more dependent round trip per tile
                dh = tl.load(p_dh + o_ptile, mask=m_p, other=0.0)
                dm = 1.0
                if DROP:  # the product took d ⊙ h_{t-1}
                    dm = tl.load(p_dm + o_ptile, mask=m_p, other=0.0)
                if PROJ:
                    dy = load_dy(p_dy, s - 1, b_len, o_b, m_b, o_p, m_p, B, s_y, reverse)
                    zg, zg_t, dy_t = 0.0, 0.0, 0.0
                    if ZONE_H:  # zh_t of g_t = dh_t + dy_t reaches h_{t-1} directly
                        dy_t = load_dy(p_dy, s, b_len, o_b, m_b, o_p, m_p, B, s_y, reverse)
                        zg_t = load_dy(p_zh, s, b_len, o_b, m_b, o_p, m_p, B, s_y, reverse)
                        zg = load_dy(p_zh, s - 1, b_len, o_b, m_b, o_p, m_p, B, s_y, reverse)
                    acc = contract_bwd(zero, p_dgh, o_r * s_g, m_b, p_w, 0, o_p, P, H, G, KP, NKP, False, PREC,
                                       INTERP)
                    dh, dy = issued(dh, INTERP), issued(dy, INTERP)
                    if DROP:
                        acc = acc * issued(dm, INTERP)
                    if ZONE_H:
                        zg = issued(zg, INTERP)
                        acc = acc + issued(zg_t, INTERP) * (dh + issued(dy_t, INTERP))
                    dh = tl.where(act[None, :], acc, dh)
                    store_grad_h(p_g, (1.0 - zg) * dh, (1.0 - zg) * dy, s - 1, b_len, o_b, m_b, o_p, m_p, B, P,
                                 reverse)
                else:
                    acc = contract_bwd(zero, p_dgh, o_r * s_g, m_b, p_w, 0, o_p, P, H, GH, KP, NKP, False, PREC, INTERP)
                    if DROP:
                        acc = acc * issued(dm, INTERP)
                    dh = issued(dh, INTERP) + acc
                tl.store(p_dh + o_ptile, dh, mask=m_p)
            if PROJ:
                budget = sync(p_cnt, p_err, (NS * r + 3) * n_sync, budget, BARRIER, INTERP)
            else:
                tl.debug_barrier()  # the next step's pointwise part reads dh across threads
