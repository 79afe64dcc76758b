"""The critical-path reader of the compile gate (tools/compile_check/sass_path.py) on
handcrafted SASS in cuobjdump's format, where the answer is known by construction."""
from __future__ import annotations

import textwrap

from tools.compile_check import sass_path
from fusedrnn import machine


def sass(body: str, name: str = "k") -> str:
    """cuobjdump -sass text of one function: one instruction a line, addresses 0x10 apart."""
    lines = [f"\t\tFunction : {name}"]
    for n, text in enumerate(t for t in textwrap.dedent(body).strip().splitlines() if t.strip()):
        lines.append(f"        /*{n * 16:04x}*/                   {text.strip()} ;   /* 0x000000000000 */")
        lines.append("                                                  /* 0x000000000000 */")
    return "\n".join(lines)


def one(body: str, **kw) -> sass_path.PathReport:
    insts = sass_path.parse(sass(body))["k"]
    return sass_path.analyse(insts, **kw)


# A persistent step: poll a flag (do-while), load the exchanged data it guards, CTA barrier,
# a chain of two dependent mmas, publish, loop. Two dependent round trips, one of them a flag.
STEP = """
    MOV R1, 0x1
    LDG.E R2, desc[UR4][R8.64]
    ISETP.NE.AND P0, PT, R2, RZ, PT
    HMMA.16816.F32.BF16 R40, R20, R24, RZ
    LDG.E.STRONG.GPU R3, desc[UR4][R10.64]
    ISETP.GE.AND P1, PT, R3, R1, PT
    @!P1 BRA 0x40
    LDG.E.128 R12, desc[UR4][R14.64]
    STS.128 [R16], R12
    BAR.SYNC.DEFER_BLOCKING 0x0
    LDSM.16.M88.4 R20, [R17]
    HMMA.16816.F32.BF16 R40, R20, R24, RZ
    HMMA.16816.F32.BF16 R40, R20, R26, R40
    STG.E.STRONG.GPU desc[UR4][R10.64], R1
    @P0 BRA 0x30
    EXIT
"""


def test_a_poll_then_its_data_is_two_round_trips_one_a_flag():
    r = one(STEP)
    assert r.loop == (0x30, 0xe0)  # the backward branch around the mma, not the poll loop
    assert (r.round_trips, r.flag_round_trips) == (2, 1)
    assert r.barriers == 1 and r.cluster_barriers == 0
    assert r.insts_per_step == 12  # 0x30 .. 0xe0, the poll once
    assert r.mma == 3 and r.mma_chain == 2


def test_the_step_loop_is_the_outermost_loop_around_the_mma():
    """A set-up loop before the time loop (no mma in it) is not the step loop."""
    setup = """
        LDG.E R5, desc[UR4][R8.64]
        IADD3 R5, R5, 0x1, RZ
        @P2 BRA 0x0
    """
    insts = sass_path.parse(sass(setup + STEP.replace("0x40", "0x70").replace("0x30", "0x60")))["k"]
    r = sass_path.analyse(insts)
    assert r.loop == (0x60, 0x110) and r.round_trips == 2


def test_a_prefetch_for_the_next_step_is_not_on_this_steps_path():
    """The next step's input loaded at the end of a step and first read in the next step
    adds no round trip: the steady state counts the wait where it happens."""
    body = """
        FADD R30, R31, R32
        BAR.SYNC.DEFER_BLOCKING 0x0
        HMMA.16816.F32.BF16 R40, R20, R24, RZ
        LDG.E R31, desc[UR4][R8.64]
        @P0 BRA 0x0
    """
    assert one(body).round_trips == 1
    serial = body.replace("LDG.E R31, desc[UR4][R8.64]",
                          "LDG.E R9, desc[UR4][R8.64]\n    IADD3 R11, R9, 0x4, RZ\n    LDG.E R31, desc[UR4][R10.64]")
    assert one(serial).round_trips == 2  # the second load's address waits for the first


def test_a_prefetch_two_steps_ahead_is_half_a_round_trip_per_step():
    """A step loop unrolled by two, each step consuming the input loaded two steps before
    (one trip ago) and loading its own parity's next one: one L2 latency per two steps.
    The same loop with each step reading the load of the step before it: one per step."""
    two_deep = """
        FADD R30, R31, R32
        BAR.SYNC.DEFER_BLOCKING 0x0
        HMMA.16816.F32.BF16 R40, R20, R24, RZ
        LDG.E R31, desc[UR4][R8.64]
        FADD R34, R33, R32
        BAR.SYNC.DEFER_BLOCKING 0x0
        HMMA.16816.F32.BF16 R42, R20, R24, RZ
        LDG.E R33, desc[UR4][R10.64]
        @P0 BRA 0x0
    """
    r = one(two_deep, steps_per_trip=2)
    assert r.round_trips == 0.5 and r.barriers == 1 and r.insts_per_step == 4.5 and r.mma == 1
    assert r.mma_chain == 1  # each step's own chain: the two steps' mmas are not linked
    assert one(two_deep).round_trips == 1  # the same loop read as one step per trip
    one_deep = two_deep.replace("FADD R30, R31", "FADD R30, R33").replace("FADD R34, R33", "FADD R34, R31")
    assert one(one_deep, steps_per_trip=2).round_trips == 1  # each step reads the previous step's load


def test_the_mma_chain_is_one_steps_whether_steps_link_through_registers_or_shared_memory():
    """Two steps per trip, each a chain of two mmas. Linked through registers (the state
    converted to the next mma's operand): the chain grows by two a step. Through shared
    memory (not followed): each step's own chain of two, not the trip's four, nor one."""
    linked = """
        HMMA.16816.F32.BF16 R40, R20, R24, RZ
        HMMA.16816.F32.BF16 R40, R20, R26, R40
        F2FP.BF16.F32.PACK_AB R20, R41, R40
        HMMA.16816.F32.BF16 R40, R20, R24, RZ
        HMMA.16816.F32.BF16 R40, R20, R26, R40
        F2FP.BF16.F32.PACK_AB R20, R41, R40
        @P0 BRA 0x0
    """
    assert one(linked, steps_per_trip=2).mma_chain == 2
    via_smem = linked.replace("F2FP.BF16.F32.PACK_AB R20, R41, R40", "STS [R3], R40\n    LDS R20, [R3]")
    assert one(via_smem, steps_per_trip=2).mma_chain == 2
    assert one(linked.replace("R26, R40", "R26, RZ"), steps_per_trip=2).mma_chain == 1


def test_cp_async_waits_count_at_the_depbar():
    body = """
        HMMA.16816.F32.BF16 R40, R20, R24, RZ
        LDGSTS.E.BYPASS.128 [R3], desc[UR4][R8.64]
        LDGDEPBAR
        DEPBAR.LE SB0, 0x0
        LDGSTS.E.BYPASS.128 [R3], desc[UR4][R10.64]
        LDGDEPBAR
        DEPBAR.LE SB0, 0x0
        @P0 BRA 0x0
    """
    assert one(body).round_trips == 2
    overlapped = body.replace("DEPBAR.LE SB0, 0x0\n", "", 1)  # both copies in flight, one wait
    assert one(overlapped).round_trips == 1


def test_a_branch_on_a_known_parameter_is_followed():
    """c[0x0][0x290] holds the tier: with it known only that tier's side is walked."""
    body = """
        LDC R7, c[0x0][0x290]
        ISETP.NE.AND P3, PT, R7, 0x3, PT
        HMMA.16816.F32.BF16 R40, R20, R24, RZ
        @P3 BRA 0x70
        LDG.E.STRONG.GPU R3, desc[UR4][R10.64]
        ISETP.GE.AND P1, PT, R3, R1, PT
        LDG.E R4, desc[UR4][R12.64]
        UCGABAR_WAIT
        FADD R5, R4, R4
        @P0 BRA 0x20
    """
    grid, cluster, unknown = one(body, params={0x290: 3}), one(body, params={0x290: 2}), one(body)
    assert (grid.round_trips, grid.flag_round_trips, grid.cluster_barriers) == (2, 1, 1)
    assert (cluster.round_trips, cluster.cluster_barriers, cluster.unknown_branches) == (0, 1, 0)
    assert unknown.round_trips == 2 and unknown.unknown_branches == 1  # both sides: an upper bound


def test_a_rotated_poll_skipped_when_ready_runs_zero_times():
    body = """
        HMMA.16816.F32.BF16 R40, R20, R24, RZ
        LDG.E.STRONG.GPU R3, desc[UR4][R10.64]
        ISETP.GE.AND P1, PT, R3, R1, PT
        @P1 BRA 0x70
        LDG.E.STRONG.GPU R3, desc[UR4][R10.64]
        ISETP.GE.AND P1, PT, R3, R1, PT
        @!P1 BRA 0x40
        LDG.E R4, desc[UR4][R12.64]
        FADD R5, R4, R4
        @P0 BRA 0x0
    """
    r = one(body)
    assert (r.round_trips, r.flag_round_trips) == (2, 1)
    assert r.insts_per_step == 7  # the loop body of 3 not counted


def test_inner_loops_repeat_their_trips():
    """A streamed chunk loop whose load is consumed before the next is issued: a round trip
    per chunk."""
    body = """
        HMMA.16816.F32.BF16 R40, R20, R24, RZ
        LDG.E.128 R12, desc[UR4][R14.64]
        STS.128 [R16], R12
        HMMA.16816.F32.BF16 R40, R20, R24, R40
        @P2 BRA 0x10
        @P0 BRA 0x0
    """
    assert one(body).round_trips == 1
    r = one(body, inner_trips=4)
    assert r.round_trips == 4 and r.mma == 1 + 4 and r.mma_chain == 5


def test_the_prediction_charges_each_term():
    m = machine.load()
    r = one(STEP)
    clk = m["clock_ghz"] * 1e3
    issue = machine.issue_us(m, r.insts_per_step, 8)
    want = (m["flag_round_trip_us"] + m["l2_latency_us"] + m["cta_sync_us"]
            + max(issue, 2 * m["mma_dep_cycles_bf16"] / clk))
    assert abs(sass_path.predicted_us(r, m, 16, 8) - want) < 1e-12


def test_kernel_parameter_offsets_from_the_elf():
    elf = """
.nv.info._Z3fooi
	Attribute:	EIATTR_KPARAM_INFO
	Value:	Index : 0x0	Ordinal : 0x1	Offset  : 0x80	Size    : 0xd8
	Attribute:	EIATTR_KPARAM_INFO
	Value:	Index : 0x0	Ordinal : 0x0	Offset  : 0x0	Size    : 0x80
"""
    assert sass_path.param_offsets(elf) == {"_Z3fooi": {1: 0x80, 0: 0}}


def test_the_anchor_verdict_counts_auto_and_each_backend():
    """Two anchor rows (LSTM B1·H256 bf16, fw and fwbw): cuDNN's fastest dtype is 14.21 and
    31.46 µs/step; Triton predicted slower, CUDA faster: auto takes the faster backend per row."""
    from tools.compile_check.anchor_verdict import verdict_lines
    from tools.compile_check.rows import Row

    def row(backend, direction, us):
        return Row(backend, "k", "lstm", "bf16", 1, 256, direction, "D1" if backend == "triton" else "any", "grid",
                   predicted_us=us)
    rows = [row("triton", "fwd", 20.0), row("triton", "bwd", 20.0), row("cuda", "fwd", 7.0), row("cuda", "bwd", 7.0)]
    lines = verdict_lines(rows, machine.load())
    assert lines[0].startswith("predicted: bf16 beats cuDNN on 2 of 2 anchor rows, geomean ")
    assert "predicted (triton): bf16 beats cuDNN on 0 of 2" in lines[1]
    assert "predicted (cuda): bf16 beats cuDNN on 2 of 2" in lines[2]
    geo = float(lines[0].rsplit(" ", 1)[1])
    assert abs(geo - ((14.21 / 7.0) * (31.46 / 14.0)) ** 0.5) < 0.01  # GEMMs of B1 are negligible


# A grid-tier wait as csrc/exchange.cuh writes it: the sweep of polls issued before the loop,
# `while (!ready) { timeout check; re-poll }` with the readiness test (a warp vote over the
# flags) at its head, the timeout report placed past the loop's back edge, then the data the
# flag guards (cp.async) and the next step.
WAIT_LOOP = """
    HMMA.16816.F32.BF16 R40, R20, R24, RZ
    LDG.E.STRONG.GPU R3, desc[UR4][R10.64]
    ISETP.GE.U32.AND P1, PT, R3, R1, PT
    SEL R6, RZ, 0x1, P1
    ISETP.NE.AND P3, PT, R6, RZ, PT
    VOTE.ALL P3, !P3
    @P3 BRA 0xe0
    VOTE.ANY P5, P4
    @P5 BRA 0xc0
    LDG.E.STRONG.GPU R3, desc[UR4][R10.64]
    BRA 0x20
    NOP
    ATOMG.E.CAS.STRONG.GPU PT, R4, [R6], R4, R5
    STG.E desc[UR4][R6.64+0x4], R4
    MEMBAR.ALL.GPU
    LDGSTS.E.BYPASS.128 [R3], desc[UR4][R8.64]
    LDGDEPBAR
    DEPBAR.LE SB0, 0x0
    @P0 BRA 0x0
"""


def test_a_wait_loop_leaves_at_its_readiness_test():
    """With the flags ready at the first look the loop leaves at its vote: the re-poll and the
    timeout report past it never run. Two round trips: the sweep's flag, then its data."""
    r = one(WAIT_LOOP)
    assert (r.round_trips, r.flag_round_trips) == (2, 1)
    assert [op for _, op, _, _ in r.loads] == ["LDG.E.STRONG.GPU", "LDGSTS.E.BYPASS.128"]


def test_a_wait_loop_still_counts_a_real_extra_round_trip():
    """A second flag read after the wait whose address depends on the first (a real serial
    round trip on the path) still counts, as does a test on something that is not a flag."""
    serial = WAIT_LOOP.replace("MEMBAR.ALL.GPU", "LDG.E.STRONG.GPU R9, desc[UR4][R4.64]\n    IADD3 R8, R9, R3, RZ"
                               ).replace("ATOMG.E.CAS.STRONG.GPU PT, R4, [R6], R4, R5", "IADD3 R4, R3, 0x4, RZ")
    r = one(serial)
    assert (r.round_trips, r.flag_round_trips) == (3, 2)
    # the loop's exit tested on a value that is not a flag's (R6 from a plain register): not a
    # readiness test, so the walk takes both sides and counts the re-poll too
    not_flag = WAIT_LOOP.replace("ISETP.NE.AND P3, PT, R6, RZ, PT", "ISETP.NE.AND P3, PT, R7, RZ, PT")
    assert one(not_flag).round_trips > 2


def _layout(tier: int, **stage) -> dict:
    """A plan's layout as fusedrnn._C.plan_for reports it: one stage, every field an int."""
    from tools.compile_check import cuda_walks
    st = dict.fromkeys(cuda_walks.STAGE_FIELDS, 1) | stage
    return dict.fromkeys(cuda_walks.LAYOUT_FIELDS, 1) | {"tier": tier, "stages": [st]}


def _walk(body: str, layout: dict, at: int = 0x80) -> dict:
    """The walk of a persistent kernel whose Layout parameter sits at byte `at` of its parameters."""
    from tools.compile_check import cuda_walks
    return cuda_walks.walk(sass_path.parse(sass(body))["k"], at, layout)


def _param(field: str, stage: int | None = None, at: int = 0x80) -> str:
    from tools.compile_check import cuda_walks
    return f"c[0x0][{sass_path.PARAM_BASE_SM90 + at + cuda_walks.field_offset(field, stage):#x}]"


def test_the_grid_tier_is_walked_per_pass_count():
    """The persistent kernel's grid tier branches on each stage's NP (a kernel parameter,
    Layout::st[k].NP): the one-pass walk reads the one-pass side only (a flag, its data), the
    multi-pass walk the other side (a second pass's flag and data), with the tier and NP at
    the offsets csrc/layout.h asserts."""
    body = f"""
        LDC R7, {_param("tier")}
        ISETP.NE.AND P3, PT, R7, 0x3, PT
        HMMA.16816.F32.BF16 R40, R20, R24, RZ
        @P3 BRA 0x170
        LDC R9, {_param("NP", 0)}
        ISETP.NE.AND P2, PT, R9, 0x1, PT
        @P2 BRA 0xd0
        LDG.E.STRONG.GPU R3, desc[UR4][R10.64]
        ISETP.GE.U32.AND P1, PT, R3, R1, PT
        LDGSTS.E.BYPASS.128 [R12], desc[UR4][R14.64]
        LDGDEPBAR
        DEPBAR.LE SB0, 0x0
        BRA 0x170
        LDG.E.STRONG.GPU R3, desc[UR4][R10.64]
        ISETP.GE.U32.AND P1, PT, R3, R1, PT
        LDGSTS.E.BYPASS.128 [R12], desc[UR4][R14.64]
        LDGDEPBAR
        DEPBAR.LE SB0, 0x0
        LDG.E.STRONG.GPU R4, desc[UR4][R10.64+0x4]
        ISETP.GE.U32.AND P1, PT, R4, R1, PT
        LDGSTS.E.BYPASS.128 [R16], desc[UR4][R18.64]
        LDGDEPBAR
        DEPBAR.LE SB0, 0x0
        @P0 BRA 0x20
    """
    one_pass = _walk(body, _layout(3, NP=1))
    assert (one_pass["round_trips"], one_pass["flag_round_trips"], one_pass["unknown_branches"]) == (2, 1, 0)
    many = _walk(body, _layout(3, NP=4))
    assert (many["round_trips"], many["flag_round_trips"]) == (4, 2)
    assert _walk(body, _layout(2))["round_trips"] == 0


# A pointwise over pair slots unrolled 4 times, slot i skipped past the plan's ppt (`i < ppt`
# tested on the kernel parameter), each slot summing split-K slices past the plan's KS only
# (`ks >= KS` returns).
SLOTS = """
    LDC R7, {ppt}
    LDC R8, {ks}
    HMMA.16816.F32.BF16 R40, R20, R24, RZ
    ISETP.GE.AND P1, PT, R7, 0x1, PT
    @!P1 BRA 0x{end:x}
    LDS R10, [R2]
    ISETP.GE.AND P2, PT, R8, 0x2, PT
    @!P2 BRA 0x{slot2:x}
    LDS R11, [R2+0x100]
    FADD R10, R10, R11
    ISETP.GE.AND P1, PT, R7, 0x2, PT
    @!P1 BRA 0x{end:x}
    LDS R10, [R3]
    ISETP.GE.AND P2, PT, R8, 0x2, PT
    @!P2 BRA 0x{end:x}
    LDS R11, [R3+0x100]
    FADD R10, R10, R11
    @P0 BRA 0x20
"""


def test_the_walk_reads_the_plans_pair_slots_and_split_k():
    """Branches on a stage's ppt and KS (Layout::st[0], kernel parameters) are resolved by
    the plan's values: one slot and one slice walk the first slot's load alone, two and two
    every load; a walk told nothing takes both sides of each (the upper bound it had)."""
    body = SLOTS.format(ppt=_param("ppt", 0), ks=_param("KS", 0), end=0x110, slot2=0xa0)
    small = _walk(body, _layout(1, ppt=1, KS=1))
    full = _walk(body, _layout(1, ppt=2, KS=2))
    told_nothing = sass_path.analyse(sass_path.parse(sass(body))["k"]).as_dict()
    assert small["unknown_branches"] == full["unknown_branches"] == 0
    assert told_nothing["unknown_branches"] == 4
    # of the loop's 16: the mma, slot 0's test, its first slice, the KS test, slot 1's test, the back edge
    assert small["insts_per_step"] == 9
    assert full["insts_per_step"] == told_nothing["insts_per_step"] == 16
    assert _walk(body, _layout(1, ppt=2, KS=1))["insts_per_step"] == 12


def test_the_walk_key_names_the_values_it_was_told():
    from tools.compile_check import cuda_walks
    key = cuda_walks.walk_key(_layout(3, KS=2, ppt=4, NP=6))
    assert key.startswith("tier3 nst1 D1 NU1 | ") and "KS2" in key and "ppt4" in key and "NP6" in key


# A layout field loaded before the step loop into a register that is written again past the
# loop (so not defined once), tested inside the loop after a join (0x40) of two paths.
FIELD_ACROSS_JOINS = """
    LDC R5, {ks}
    HMMA.16816.F32.BF16 R40, R20, R24, RZ
    @P0 BRA 0x40
    {other_side}
    ISETP.GE.AND P1, PT, R5, 0x2, PT
    @!P1 BRA 0x70
    LDS R11, [R2+0x100]
    @P2 BRA 0x10
    MOV R5, 0x7
    EXIT
"""


def test_a_field_is_known_across_joins_where_every_path_agrees():
    """The field's test is resolved inside the loop, past a join, when every path into the
    join carries the field's value (the control-flow scan); when one path overwrites the
    register, the test stays unknown and the walk takes both sides."""
    ks = _param("KS", 0)
    agree = FIELD_ACROSS_JOINS.format(ks=ks, other_side="FADD R1, R1, R2")
    r = _walk(agree, _layout(1, KS=1))
    assert r["unknown_branches"] == 1 and r["insts_per_step"] == 6  # only @P0's two sides
    assert _walk(agree, _layout(1, KS=2))["insts_per_step"] == 7
    differ = FIELD_ACROSS_JOINS.format(ks=ks, other_side="MOV R5, 0x1")
    assert _walk(differ, _layout(1, KS=2))["unknown_branches"] == 2


def test_a_two_word_constant_load_sets_both_registers():
    """`LDC.64 R4, c[..]` loads two adjacent parameter words (here ldp and KS of stage 0):
    the test on R5, the second word, is resolved by the plan's KS."""
    at = sass_path.PARAM_BASE_SM90 + 0x80
    from tools.compile_check import cuda_walks
    pair = f"c[0x0][{at + cuda_walks.field_offset('ldp', 0):#x}]"
    body = f"""
        HMMA.16816.F32.BF16 R40, R20, R24, RZ
        LDC.64 R4, {pair}
        ISETP.GE.AND P0, PT, R5, 0x2, PT
        @!P0 BRA 0x50
        LDS R11, [R2+0x100]
        @P2 BRA 0x0
    """
    one = _walk(body, _layout(1, KS=1))
    assert one["unknown_branches"] == 0 and one["insts_per_step"] == 5
    assert _walk(body, _layout(1, KS=2))["insts_per_step"] == 6


def test_a_cuda_row_takes_the_planners_estimate_where_it_is_larger():
    """The walk runs the step's inner loops once (a k-step, a pass), so a persistent CUDA row's
    prediction is the larger of the walk's and the planner's estimate (which charges those trips
    and the exchange's bandwidth); the walk's terms stay beside it."""
    from tools.compile_check import cuda_rows
    from tools.compile_check.rows import Row

    counts = one(STEP).as_dict()
    walk_us = sass_path.predicted_us(one(STEP), machine.load(), 16, cuda_rows.THREADS // 32)
    for plan_us, want in ((walk_us + 10.0, walk_us + 10.0), (walk_us / 2, walk_us)):
        row = Row("cuda", "k", "lstm", "bf16", 64, 1024, "bwd", "any", "grid")
        cuda_rows.set_path(row, counts, {"estimate": {"step_us": plan_us}, "layout": {"stages": [{"NP": 6}]}},
                           "persistent", "bf16")
        assert abs(row.predicted_us - round(want, 2)) < 1e-9
        assert ("plan" in row.path["terms"]) == (plan_us > walk_us)
        assert row.extra_passes == 5
