"""The Triton launch choice planned for an H100 without a GPU: `config.choose` takes the
device's limits as plain numbers, always finds a configuration, keeps every barrier grid
co-resident, bounds its tiles, and accounts for all the shared memory Triton stages.
The compile gate (tests/test_compile_gate_triton.py) checks the same choices against
what the compiler really produces."""
from __future__ import annotations

import pytest
import torch

from tools.compile_check.cases import ANCHORS, SWEEP_B, SWEEP_H
from fusedrnn import machine
from fusedrnn.ops.triton import config, model

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SHAPES = sorted(set(ANCHORS) | {(b, h) for b in SWEEP_B for h in SWEEP_H})


@pytest.fixture(autouse=True)
def gpu_choice(monkeypatch):
    """Plan as on a GPU (the interpreter never picks the grid) with the default table."""
    monkeypatch.setattr(config, "INTERPRET", False)
    monkeypatch.setitem(config.TUNING, "layout", "auto")


def test_choose_needs_no_device(monkeypatch):
    def no_cuda(*args, **kwargs):
        raise AssertionError("choose must not ask torch about a device")
    monkeypatch.setattr(torch.cuda, "get_device_properties", no_cuda)
    config.choose("lstm", 64, 1024, torch.bfloat16, config.H100, "fwd")


def v2_variants(cell: str, H: int) -> list[tuple[int, int]]:
    """(proj, directions) the choice is asked about: one and two directions, and for the
    LSTM a projection of a quarter of H (proj_size < hidden_size, as torch requires)."""
    out = [(0, 1), (0, 2)]
    if cell == "lstm" and H >= 4:
        out += [(H // 4, 1), (H // 4, 2)]
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_every_sweep_shape_gets_a_fitting_launch(cell, dtype):
    limit = config.H100.smem_optin
    for B, H in SHAPES:
        for direction in ("fwd", "bwd"):
            for proj, D in v2_variants(cell, H):
                launch = config.choose(cell, B, H, dtype, config.H100, direction, proj=proj, directions=D)
                n_n, n_b, n_d = launch.grid
                assert launch.D == D and n_d in (1, D) and launch.launches * n_d == D
                assert launch.PROJ == bool(proj) and (launch.KR >= 16 or not proj or launch.CARRY)
                assert launch.N_TILES * launch.BLOCK_N * n_n >= H and n_b * launch.BLOCK_B >= B
                assert (n_n - 1) * launch.N_TILES * launch.BLOCK_N < H  # no idle program
                # a wide resident tile (config.resident_wide) is admitted by its compile findings, not the estimate
                wide = launch.RESIDENT and launch.BLOCK_N >= config.TUNING["resident_wide_bn_min"] and (
                    launch.num_warps == config.TUNING["resident_wide_warps"])
                assert launch.smem_est <= limit and (launch.regs_est <= config.TUNING["regs_budget"] or wide)
                widest = config.TUNING["cta_max"] if launch.CARRY else max(config.TUNING["block_n"])
                assert launch.BLOCK_N <= widest and launch.BLOCK_B <= config.TUNING["block_b_max"]
                if launch.BARRIER:  # co-resident, every direction of the launch: one program per SM at most
                    assert n_n * n_b * n_d <= config.H100.sms * config.TUNING["programs_per_sm"]
                if launch.RESIDENT:
                    assert launch.N_TILES == 1 and launch.KP * launch.NKP >= (proj or H if direction == "fwd" else H)
                if launch.CARRY and proj:
                    assert direction == "fwd" and launch.KP >= proj and launch.BLOCK_N >= H


def test_two_directions_plan_one_launch_or_two_by_the_model():
    """Both directions in one launch halve the grid's programs per direction; where that is
    slower than each direction with the whole device in turn (e.g. LSTM B8 H256 forward on an
    8-SM device: one launch leaves 4 programs per direction, each streaming more tiles, a
    dependent round trip per STREAM_AHEAD chunks), the choice runs two launches and says so."""
    small = config.DeviceLimits(sms=8, smem_optin=227 * 1024, regs_per_sm=65536)
    two = config.choose("lstm", 8, 256, torch.bfloat16, small, "fwd", directions=2)
    one = config.choose("lstm", 8, 256, torch.bfloat16, small, "fwd")
    assert two.launches == 2 and two.grid == one.grid[:2] + (1,)
    assert two.us_per_step == pytest.approx(2 * one.us_per_step)
    single = [c for c in config.candidates("lstm", 8, 256, torch.bfloat16, small, "fwd", directions=2)
              if c.launches == 1]
    assert single and min(c.us_per_step for c in single) > two.us_per_step
    # the encoder on an H100: one launch, both directions' programs co-resident
    enc = config.choose("lstm", 32, 512, torch.float16, config.H100, "fwd", directions=2)
    assert enc.launches == 1 and enc.grid[2] == 2 and enc.BARRIER
    assert enc.grid[0] * enc.grid[1] * 2 <= config.H100.sms


def test_the_projection_never_carries_the_lstm_backward():
    for B, H in ANCHORS:
        launch = config.choose("lstm", B, H, torch.bfloat16, config.H100, "bwd", "cta", proj=H // 4)
        assert not launch.CARRY and launch.PROJ
    launch = config.choose("lstm", 3, 40, torch.bfloat16, config.H100, "fwd", "cta", proj=7)
    assert launch.CARRY and launch.KP == 16 and launch.BLOCK_N == 64
    with pytest.raises(ValueError, match="LSTM only"):
        config.choose("gru", 3, 40, torch.bfloat16, config.H100, "fwd", proj=7)


def test_cta_counts_the_resident_projection():
    """cta keeps W_hr (P x H, padded to KP x BLOCK_N) beside W_hh and stages m_t for its product."""
    base = config.resources("lstm", "fwd", 16, 16, 64, 16, 1, True, 4, 1, carry=True)
    proj = config.resources("lstm", "fwd", 16, 16, 64, 16, 1, True, 4, 1, carry=True, proj=10)
    assert proj[0] - base[0] == 16 * 64 * 2 + 64 * 16 * 4 and proj[1] > base[1]


def test_shared_memory_counts_what_triton_stages():
    """Issue 11, fix 1: RNN B64 H1024 used to be called resident from the W slice alone and
    needed 288-320 KB with the fp32 h tile; every staged byte is counted now."""
    for dtype in DTYPES:
        for direction in ("fwd", "bwd"):
            launch = config.choose("rnn_tanh", 64, 1024, dtype, config.H100, direction)
            bits = torch.finfo(dtype).bits
            smem, _ = config.resources("rnn_tanh", direction, bits, launch.BLOCK_B, launch.BLOCK_N, launch.KP,
                                       launch.NKP, launch.RESIDENT, launch.num_warps, launch.num_stages)
            m_rows = launch.BLOCK_N
            staged = launch.KP * launch.BLOCK_B * 4 + m_rows * launch.BLOCK_B * 4
            w = m_rows * launch.KP * launch.NKP * bits // 8 if launch.RESIDENT else m_rows * launch.KP * bits // 8
            assert smem >= staged + w and smem <= config.H100.smem_optin - config.TUNING["smem_margin"]


def test_block_n_is_bounded_at_large_batch():
    """Issue 11, fix 2: LSTM B4096 H1024 used to double BLOCK_N up to 512 (0.8 MB of shared memory)."""
    for dtype in DTYPES:
        for direction in ("fwd", "bwd"):
            launch = config.choose("lstm", 4096, 1024, dtype, config.H100, direction)
            assert launch.BLOCK_N <= 128 and launch.smem_est <= config.H100.smem_optin


def test_a_smaller_device_gets_smaller_grids():
    small = config.DeviceLimits(sms=20, smem_optin=99 * 1024, regs_per_sm=65536)
    for B, H in ANCHORS:
        launch = config.choose("lstm", B, H, torch.bfloat16, small, "fwd")
        if launch.BARRIER:
            assert launch.grid[0] * launch.grid[1] * launch.grid[2] <= 20
        assert launch.smem_est <= small.smem_optin


def test_forced_layouts_and_unknown_names():
    assert config.choose("gru", 3, 40, torch.float32, config.H100, "fwd", "solo").layout == "solo"
    assert config.choose("gru", 3, 40, torch.float32, config.H100, "fwd", "grid").BARRIER
    assert config.choose("gru", 3, 17, torch.bfloat16, config.H100, "fwd", "cta").layout == "cta"
    # cta cannot hold H=2048: the automatic choice stands
    assert config.choose("lstm", 1, 2048, torch.float32, config.H100, "fwd", "cta").layout != "cta"
    with pytest.raises(ValueError, match="unknown layout"):
        config.choose("gru", 3, 40, torch.float32, config.H100, "fwd", "fastest")


def test_resident_pieces_are_as_few_as_fit():
    """Issue 29: each piece of a resident contraction is one sweep of exchange loads, and the
    compiled step waits one L2 round trip per piece (ptxas issues a piece's loads only after
    the previous piece arrived), so the fewest pieces win, then the fewest columns; a piece
    loads at most TUNING["resident_piece_elems"] fp32 values (KP x BLOCK_B)."""
    assert config.resident_pieces(256) == (256, 1)
    assert config.resident_pieces(33) == (64, 1)
    assert config.resident_pieces(768) == (1024, 1)
    assert config.resident_pieces(2048) == (1024, 2)
    assert config.resident_pieces(768, block_b=64) == (256, 3)  # 256 x 64 values per piece
    assert config.resident_pieces(1000, block_b=64) == (256, 4)
    assert config.resident_pieces(4096, block_b=64) is None  # more than 8 pieces: streamed


def test_a_large_forward_keeps_w_hh_resident_in_pieces():
    """Issue 29: at B16·H768 (bf16) the forward streamed W_hh in 64-wide chunks, one L2 round
    trip per two chunks (8 per step), because its exchanged vector (768 x 16) was over the
    one-piece staging limit. Compiled for sm_90, three resident pieces of 256 x 16 in tiles of
    8 units spill nothing and take two exchange round trips (the first piece, then the rest),
    so every cell keeps its slice resident there; pieces of tiles wider than 8 units spill and
    are refused, as is a piece wider than TUNING["resident_staged_max"] values."""
    for cell in ("lstm", "gru", "rnn_tanh"):
        launch = config.choose(cell, 16, 768, torch.bfloat16, config.H100, "fwd")
        assert (launch.RESIDENT, launch.BLOCK_N, launch.KP, launch.NKP, launch.grid) == (
            True, 8, 256, 3, (96, 1, 1)), launch
    assert config.resident_pieces_for("fwd", 768, 16) == (256, 3)
    assert config.resident_pieces_for("fwd", 256, 16) == (256, 1)  # B1·H256: one piece, as before
    assert config.resident_pieces_for("bwd", 256, 16, G=4) == (1024, 1)  # the backward's pieces are unchanged
    assert config.resident_ok("fwd", 16, 768, 16, block_n=8, G=4)
    assert not config.resident_ok("fwd", 16, 768, 16, block_n=16, G=1)  # spilled: RNN, 8 bytes
    assert config.resident_ok("fwd", 16, 256, 16, block_n=32, G=1)  # one piece: any tile
    assert not config.resident_ok("fwd", 32, 768, 16, block_n=8, G=4)  # fp32: a 96 KB slice spilled
    # B64·H1024: a batch tile of 32 needs 4 x 16 x 1024 bf16 per program in 8 pieces of 128: it spilled
    assert not config.choose("lstm", 64, 1024, torch.bfloat16, config.H100, "fwd").RESIDENT


#: (cell, B, H, direction) -> (grid, BLOCK_B, BLOCK_N, KP, NKP, warps) of the wide resident tiles, each
#: compiled for sm_90 with 2 round trips per step and no spill (tests/test_critical_path.py pins them)
WIDE = {("rnn_tanh", 256, 512, "fwd"): ((8, 16, 1), 16, 64, 512, 1, 8),
        ("rnn_tanh", 256, 512, "bwd"): ((8, 16, 1), 16, 64, 512, 1, 8),
        ("rnn_tanh", 64, 1024, "fwd"): ((32, 4, 1), 16, 32, 512, 2, 8),
        ("rnn_tanh", 64, 1024, "bwd"): ((32, 4, 1), 16, 32, 256, 4, 8),
        ("lstm", 256, 512, "fwd"): ((16, 8, 1), 32, 32, 256, 2, 8),
        ("gru", 256, 512, "fwd"): ((16, 8, 1), 32, 32, 256, 2, 8)}


@pytest.mark.parametrize("cell,B,H,direction", sorted(WIDE))
def test_the_large_shapes_keep_w_hh_resident_in_wide_tiles(cell, B, H, direction):
    """Issue 29: at B256·H512 and B64·H1024 no tile of 8 units fits one program per unit tile, so
    these rows streamed W_hh in chunks of 64 (6-11 round trips per step from the sm_90 SASS). A
    tile of 32-64 units holds it resident (32-128 KB) with one step's exchange (8-16 K fp32
    values) in one sweep of loads; the model predicts it faster, so choose takes it."""
    launch = config.choose(cell, B, H, torch.bfloat16, config.H100, direction)
    got = (launch.grid, launch.BLOCK_B, launch.BLOCK_N, launch.KP, launch.NKP, launch.num_warps)
    assert launch.RESIDENT and launch.layout == "grid" and got == WIDE[cell, B, H, direction], launch
    streamed = [c for c in config.candidates(cell, B, H, torch.bfloat16, config.H100, direction) if not c.RESIDENT]
    assert launch.us_per_step < min(c.us_per_step for c in streamed)
    assert model.step_us("grid", launch.grid[0], 1, launch.BLOCK_N, launch.BLOCK_B, config.gate_slots(cell),
                         launch.KP, launch.NKP, True, B, H, 1 if cell == "rnn_tanh" else 4, 16, direction,
                         config.uses_wgmma(launch.BLOCK_N * (1 if direction == "bwd" else config.gate_slots(cell)),
                                           launch.BLOCK_B, 8), warps=8)["round_trips"] == 2


def test_wide_tiles_only_where_they_compiled_without_a_spill():
    """resident_wide's limits are the compile findings (sm_90): what spilled there is refused, and
    wide tiles are offered only where no narrow resident layout exists (the small shapes keep theirs)."""
    assert config.resident_wide("fwd", 512, 16, 64) == (512, 1)  # RNN B256·H512
    assert config.resident_wide("fwd", 1024, 16, 64) is None  # RNN 64 x 1024: 616 bytes spilled
    assert config.resident_wide("fwd", 512, 32, 32) is None  # RNN 32 x 512 at 32 rows: 8 bytes spilled
    assert config.resident_wide("fwd", 512, 32, 32, G=4) == (256, 2)  # LSTM: one piece of 512 spilled 112
    assert config.resident_wide("fwd", 1024, 16, 32, G=4) is None  # LSTM B64·H1024: 256 KB per program
    assert config.resident_wide("bwd", 512, 32, 32, G=4) is None  # LSTM B256·H512: 256 KB of d_gates a step
    assert config.resident_wide("fwd", 512, 16, 16) is None  # narrower tiles: resident_pieces_bn_max's rule
    assert not config.resident_ok("fwd", 16, 512, 16, block_n=64, G=1, extra_live=True)  # the masks: untried
    assert not config.resident_ok("fwd", 32, 512, 16, block_n=64, G=1)  # fp32: untried
    for cell, B, H in (("lstm", 1, 256), ("rnn_tanh", 16, 768), ("gru", 16, 768)):
        for direction in ("fwd", "bwd"):
            # the narrow pieces' tiles: 8 units, or 16 over 8 batch rows (resident_bwd_n8)
            assert config.choose(cell, B, H, torch.bfloat16, config.H100, direction).BLOCK_N < (
                config.TUNING["resident_wide_bn_min"])
    # the masked kernels keep streaming (their extra live tiles beside a wide slice are untried)
    assert not config.choose("rnn_tanh", 256, 512, torch.bfloat16, config.H100, "fwd", regularised=True).RESIDENT


def test_an_fp32_forward_keeps_w_hh_resident_in_narrow_pieces():
    """Issue 29: every fp32 grid forward streamed W_hh in 64-wide chunks (a resident tf32x3 W_hh
    spilled), 3-4 dependent round trips per step read from the SASS (and 40-72 bytes spilled at
    LSTM/GRU B1·H256 and B8·H128). Compiled for sm_90, pieces of at most 128 columns, and of at
    most 256 values over the batch rows in use, spill nothing and take the poll and one sweep
    of exchange loads: 2 round trips (B1·H256 two pieces of 128, B8·H128 four of 32), which the
    model charges. The B16·H768 slice (96 KB), the projection and the masks' kernels still
    stream (untried or spilled)."""
    f32 = torch.float32
    for cell in ("lstm", "gru", "rnn_tanh"):
        launch = config.choose(cell, 1, 256, f32, config.H100, "fwd")
        assert (launch.layout, launch.RESIDENT, launch.BLOCK_N, launch.KP, launch.NKP, launch.grid,
                launch.num_warps) == ("grid", True, 8, 128, 2, (32, 1, 1), 4), launch
    for cell in ("lstm", "gru"):
        launch = config.choose(cell, 8, 128, f32, config.H100, "fwd")
        assert (launch.layout, launch.RESIDENT, launch.BLOCK_N, launch.KP, launch.NKP, launch.grid) == (
            "grid", True, 8, 32, 4, (16, 1, 1)), launch
        charged = model.step_us(launch.layout, launch.grid[0], 1, 8, 16, 4, 32, 4, True, 8, 128,
                                config.GATES[config.CELLS[cell]], 32, "fwd", False, warps=4)["round_trips"]
        assert charged == 2
    assert config.resident_pieces_fp32(256, 1) == (128, 2)
    assert config.resident_pieces_fp32(128, 8) == (32, 4)
    assert config.resident_pieces_fp32(768, 16) is None  # 48 pieces of 16
    assert not config.choose("lstm", 16, 768, f32, config.H100, "fwd").RESIDENT
    for kw in (dict(regularised=True), dict(proj=64)):
        assert not config.choose("lstm", 1, 256, f32, config.H100, "fwd", **kw).RESIDENT, kw


def test_an_fp32_backward_keeps_w_hh_resident_in_split_pieces():
    """Issue 29: every fp32 grid backward streamed W_hh (LSTM B1·H256: 10 round trips per step,
    3605 instructions; GRU 8; LSTM B8·H128 6). Its slice over all G x H rows in pieces of 128,
    each split in K over 8 warps (steps.contract_split), compiled for sm_90, spills nothing and
    takes 3-5 round trips with a quarter of the instructions (LSTM B1·H256: 5, 965); unsplit,
    pieces of 32 to 1024 spilled 152-1752 bytes. Up to 32 KB of slice, 16 batch rows, 8 units."""
    f32 = torch.float32
    for cell, B, H, nkp in (("lstm", 1, 256, 8), ("gru", 1, 256, 6), ("rnn_tanh", 1, 256, 2), ("lstm", 8, 128, 4),
                            ("gru", 8, 128, 3), ("rnn_tanh", 16, 768, 6)):
        launch = config.choose(cell, B, H, f32, config.H100, "bwd")
        assert (launch.layout, launch.RESIDENT, launch.BLOCK_N, launch.BLOCK_B, launch.KP, launch.NKP,
                launch.num_warps) == ("grid", True, 8, 16, 128, nkp, 8), (cell, B, H, launch)
    assert config.resident_pieces_for("bwd", 256, 16, G=4, bits=32) == (128, 8)
    assert not config.resident_ok("bwd", 32, 768, 16, block_n=8, G=4)  # 96 KB
    assert not config.resident_ok("bwd", 32, 256, 16, block_n=8, G=4, extra_live=True)  # the masks: untried
    assert not config.resident_ok("bwd", 32, 256, 32, block_n=8, G=4)  # 32 batch rows: untried
    for kw in (dict(regularised=True), dict(proj=64)):
        assert not config.choose("lstm", 1, 256, f32, config.H100, "bwd", **kw).RESIDENT, kw


def test_the_fp32_rnn_forward_keeps_w_hh_resident_split_in_k():
    """Issue 29: the fp32 RNN B16·H768 forward streamed W_hh in chunks of 64 (8 round trips per step read
    from the sm_90 SASS, 48 bytes spilled, 8.87 µs/step): its narrow pieces would be 48 of 16. Its 8-unit
    slice (24 KB) in 6 pieces of 128 split in K over 8 warps (steps.contract_split, as an fp32 backward's)
    read 2 round trips, 201 registers, no spill, 2.60 µs/step; the model picks it. The LSTM's and GRU's
    32-row slices spilled so (88 and 64 bytes) and still stream; B1·H256 keeps its narrow pieces."""
    f32 = torch.float32
    for cell in ("rnn_tanh", "rnn_relu"):
        launch = config.choose(cell, 16, 768, f32, config.H100, "fwd")
        assert (launch.layout, launch.RESIDENT, launch.SPLIT, launch.BLOCK_N, launch.KP, launch.NKP,
                launch.num_warps, launch.grid) == ("grid", True, True, 8, 128, 6, 8, (96, 1, 1)), launch
        assert launch.constexprs()["SPLIT"]
        assert not config.choose(cell, 1, 256, f32, config.H100, "fwd").SPLIT
        assert not config.choose(cell, 16, 768, f32, config.H100, "fwd", regularised=True).SPLIT
        assert not config.choose(cell, 16, 768, torch.bfloat16, config.H100, "fwd").SPLIT
    for cell in ("lstm", "gru"):
        assert not config.choose(cell, 16, 768, f32, config.H100, "fwd").RESIDENT
    assert config.resident_split_fwd_ok(32, 768, 16, 8, 1) == (128, 6)
    assert config.resident_split_fwd_ok(32, 768, 16, 8, 4) is None  # the LSTM's and GRU's slices spilled
    assert config.resident_split_fwd_ok(32, 256, 16, 8, 1, rows=1) is None  # B1: narrow pieces (128 x 2)
    assert config.resident_split_fwd_ok(16, 768, 16, 8, 1) is None


def test_a_16bit_backward_over_eight_batch_rows():
    """Issue 29: the LSTM bf16 B16·H768 backward (12 pieces of 256 split in K, one 16-row batch tile)
    loaded its pieces in two sweeps (all 12 in one: 192 registers of exchanged values per thread,
    spilled), 4 round trips read from the sm_90 SASS, 5.26 µs/step. Over two batch tiles of 8 rows
    (mma.sync's n8) with W on the M side (steps.contract_split) and 16-unit tiles, a program loads
    half the values: one sweep, 2 round trips, 243 registers, no spill, 3.80 µs/step; the GRU (9
    pieces) 3.93 -> 3.24 and the RNN (3) 2.16 -> 1.96 the same way. The model predicts each faster
    than the 16-row tile, so it is picked; at B <= 8 it is not offered (the cta layout and the
    16-row split are what was compiled there)."""
    for dtype in (torch.bfloat16, torch.float16):
        for cell, nkp in (("lstm", 12), ("gru", 9), ("rnn_tanh", 3)):
            launch = config.choose(cell, 16, 768, dtype, config.H100, "bwd")
            assert (launch.layout, launch.grid, launch.BLOCK_B, launch.BLOCK_N, launch.KP, launch.NKP,
                    launch.RESIDENT, launch.num_warps) == ("grid", (48, 2, 1), 8, 16, 256, nkp, True, 8), launch
            rows16 = [c for c in config.candidates(cell, 16, 768, dtype, config.H100, "bwd")
                      if c.RESIDENT and c.BLOCK_B == 16]
            assert rows16 and launch.us_per_step < min(c.us_per_step for c in rows16), rows16
        for B, H in ((1, 256), (8, 128)):
            assert all(c.layout != "grid" or c.BLOCK_B != 8
                       for c in config.candidates("lstm", B, H, dtype, config.H100, "bwd"))
    assert config.resident_bwd_n8(16, 768, 16, 4) == (256, 12)
    assert config.resident_bwd_n8(16, 768, 8, 4) is None  # 16-unit tiles only
    assert config.resident_bwd_n8(16, 768, 16, 4, extra_live=True) is None  # the masks: untried
    assert config.resident_bwd_n8(16, 768, 16, 4, proj=192) is None
    assert config.resident_bwd_n8(32, 768, 16, 4) is None
    assert config.resident_bwd_n8(16, 1024, 16, 4) is None  # 16 pieces
    assert not config.choose("lstm", 16, 768, torch.bfloat16, config.H100, "bwd", regularised=True).RESIDENT


def test_the_backward_keeps_w_hh_resident_in_pieces():
    """Issue 29: the GRU and LSTM B16·H768 backwards streamed W_hh (20 and 26 round trips per
    step read from the SASS). Their 8-unit slices over all G x 768 rows (36 and 48 KB) stay
    resident in pieces of 256 x 16 at 8 warps, each piece's product split in K over the warps
    (steps.contract_split): compiled for sm_90 without spills, 2 round trips (GRU, one sweep
    of loads) and 4 (LSTM, two sweeps); unsplit, the LSTM's spilled (64 bytes) and every warp
    ran all 384 mma of the step. 4 warps spilled (440 bytes); 32 batch rows are untried."""
    for cell, nkp in (("gru", 9), ("lstm", 12)):
        launch = config.choose(cell, 16, 768, torch.bfloat16, config.H100, "bwd")
        # over batch tiles of 8 rows (test_a_16bit_backward_over_eight_batch_rows), 16-unit tiles
        assert (launch.RESIDENT, launch.BLOCK_N, launch.KP, launch.NKP, launch.num_warps) == (
            True, 16, 256, nkp, 8), launch
        assert not any(c.RESIDENT and c.NKP > 1 and c.num_warps < 8
                       for c in config.candidates(cell, 16, 768, torch.bfloat16, config.H100, "bwd"))
    assert config.resident_pieces_for("bwd", 768, 16, G=3) == (256, 9)
    assert config.resident_ok("bwd", 16, 768, 16, block_n=8, G=4)  # LSTM: 48 KB
    assert not config.resident_ok("bwd", 16, 768, 32, block_n=8, G=3)  # pieces of 32 batch rows: untried
    assert config.TUNING["resident_bwd_pieces_warps"] == model.RESIDENT_BWD_SPLIT  # one K slice per warp


def test_the_model_charges_the_split_backward_as_compiled():
    """The backward's resident pieces split in K (steps.contract_split): the model charges the
    poll and one round trip for one sweep of loads (every piece behind the last load,
    tiles.behind; GRU B16·H768: 9 pieces, 2), the first sweep's two and one per further sweep
    (LSTM: 10 + 2 pieces, 4, read from the SASS), and a chain of mma over one warp's slice of K
    (48 at 12 x 256, read from the SASS; unsplit, 384)."""
    args = dict(layout="grid", n_programs_per_tile=96, n_tiles=1, block_n=8, block_b=16, gate_slots=4, B=16,
                H=768, bits=16, direction="bwd", wgmma=False, warps=8)
    assert model.step_us(kp=256, nkp=9, resident=True, G=3, **args)["round_trips"] == 2
    assert model.step_us(kp=256, nkp=12, resident=True, G=4, **args)["round_trips"] == 4
    # over 8 batch rows, 16-unit tiles: one sweep (LSTM B16·H768 read 2 from the SASS)
    n8 = dict(args, block_b=8, block_n=16, n_programs_per_tile=48)
    assert model.step_us(kp=256, nkp=12, resident=True, G=4, **n8)["round_trips"] == 2
    dev = machine.current()
    link_us = dev["mma_dep_cycles_bf16"] / (dev["clock_ghz"] * 1e3)
    mma = model.step_us(kp=256, nkp=12, resident=True, G=4, **args)["mma"]
    assert 48 * link_us <= mma < 384 * link_us


def test_the_model_charges_one_sweep_for_several_resident_pieces():
    """Issue 29: a forward's resident pieces each wait for the last piece's load (tiles.behind),
    so ptxas issues all their exchange loads in one sweep (LSTM B16·H768 forward, three pieces:
    the poll and one round trip read from the SASS; before, the first piece's loads, then the
    later pieces' together: two). The model charged one per piece, then two."""
    from fusedrnn.ops.triton import model
    args = dict(layout="grid", n_programs_per_tile=96, n_tiles=1, block_n=8, block_b=16, gate_slots=4, B=16,
                H=768, G=4, bits=16, direction="fwd", wgmma=False)
    assert model.step_us(kp=256, nkp=3, resident=True, **args)["round_trips"] == 1 + 1
    assert model.step_us(kp=1024, nkp=1, resident=True, **args)["round_trips"] == 1 + 1
    assert model.step_us(kp=64, nkp=1, resident=False, **args)["round_trips"] == 1 + 768 // 64 // 2


def test_the_model_charges_the_reset_before_grus_second_phase():
    """The GRU with its reset gate before the product exchanges r ⊙ h_{t-1} between two
    barriers per step: the SASS of gru_reset_before bf16 B8·H128 forward reads 4 round trips
    (2 polls, 2 sweeps of exchange loads) where the GRU reads 2; the model charged the GRU's."""
    from fusedrnn.ops.triton import model
    args = dict(layout="grid", n_programs_per_tile=16, n_tiles=1, block_n=8, block_b=16, gate_slots=4, B=8,
                H=128, G=3, bits=16, direction="fwd", wgmma=False, kp=128, nkp=1, resident=True)
    one, two = model.step_us(**args), model.step_us(second_phase=True, **args)
    assert (one["round_trips"], two["round_trips"]) == (2, 4)
    assert two["sync"] > one["sync"] and two["exchange"] > one["exchange"]
    cta = dict(args, layout="cta")
    # one program: nothing exchanged, the second phase adds no round trip (the one charged is the
    # wait for the input loaded two steps before, one L2 latency per two steps: model.CTA_PREFETCH_TRIPS,
    # 0.5 as read from the SASS of gru and gru_reset_before bf16 B8·H128 forward)
    assert model.step_us(second_phase=True, **cta)["round_trips"] == model.step_us(**cta)["round_trips"] == 0.5
    rb = config.choose("gru_reset_before", 8, 128, torch.bfloat16, config.H100, "fwd")
    plain = config.choose("gru", 8, 128, torch.bfloat16, config.H100, "fwd")
    assert rb.us_per_step > plain.us_per_step


def test_a_regularised_backward_takes_no_resident_pieces():
    """The regularisers' masks take registers: the LSTM B16·H768 backward in 12 resident pieces
    spills 24 bytes with them (the compile gate's zoneout + recurrent-dropout row), so a
    regularised call streams where the plain one keeps W_hh resident in pieces."""
    plain = config.choose("lstm", 16, 768, torch.bfloat16, config.H100, "bwd")
    reg = config.choose("lstm", 16, 768, torch.bfloat16, config.H100, "bwd", regularised=True)
    assert plain.RESIDENT and plain.NKP > 1
    assert not (reg.RESIDENT and reg.NKP > 1)
    fwd = config.choose("lstm", 16, 768, torch.bfloat16, config.H100, "fwd", regularised=True)
    assert fwd == config.choose("lstm", 16, 768, torch.bfloat16, config.H100, "fwd")  # the forward fits


def test_backward_keeps_a_small_w_hh_slice_resident():
    """Issue 29, item 2: the backward kept no W_hh resident, although the B1·H256 LSTM slice
    (4 gates x 256 x 8 units, bf16) is 16 KB; it streamed it in 16 chunks per step. Now a
    16-bit slice up to TUNING["resident_bwd_bytes"] stays resident; larger ones stream (fp32:
    test_an_fp32_backward_keeps_w_hh_resident_in_split_pieces)."""
    for dtype in (torch.bfloat16, torch.float16):
        for cell, G in (("lstm", 4), ("gru", 3), ("rnn_tanh", 1)):
            launch = config.choose(cell, 1, 256, dtype, config.H100, "bwd")
            if launch.layout == "cta":  # the RNN: one program keeps all of W_hh (8 warps: 256 elements each)
                assert cell == "rnn_tanh" and launch.RESIDENT and launch.BLOCK_N == launch.KP == 256, launch
                continue
            # all G gates' rows (steps.resident_w_bwd), in pieces split in K since one piece would be
            # 1024 wide (test_a_wide_16bit_backward_piece_is_split_in_k)
            assert launch.RESIDENT and launch.layout == "grid" and launch.KP * launch.NKP >= G * 256, launch
            assert G * 256 * launch.BLOCK_N * 2 <= config.TUNING["resident_bwd_bytes"]
    assert not config.choose("lstm", 64, 1024, torch.bfloat16, config.H100, "bwd").RESIDENT  # 16 pieces of 256
    assert not config.resident_ok("bwd", 16, 256, 16, block_n=16, G=4)  # 32 KB
    assert config.resident_ok("bwd", 16, 256, 16, block_n=8, G=4)
    assert not config.resident_ok("bwd", 16, 256, 16, block_n=8, G=4, proj=64)  # spills with the W_hr phase


def test_a_wide_16bit_backward_piece_is_split_in_k():
    """Issue 29: a 16-bit backward whose slice fits one resident piece took it, 1024 wide at RNN
    B16·H768 (768 rows padded) and LSTM/GRU B1·H256: every warp ran its chain of 2 x 1024 / 16 =
    128 mma, and the RNN's SASS (sm_90) read 3 round trips (its 16 loads issued in two groups).
    In pieces of 256 split in K over 8 warps (steps.contract_split, one sweep of loads, each
    piece behind the last load) they read 2 round trips, a chain of 12-16, no spill (RNN 3.88 ->
    2.16 µs/step from the SASS, LSTM B1·H256 3.71 -> 2.68, GRU 3.71 -> 2.39). Both are candidates
    and the model picks the split; at B8·H128 (one piece of 512) the cta layout stays (its SASS
    read faster than the split grid's: LSTM 2.18 against 2.39 µs, GRU 1.83 against 2.28)."""
    for dtype in (torch.bfloat16, torch.float16):
        for cell, B, H, nkp in (("rnn_tanh", 16, 768, 3), ("rnn_relu", 16, 768, 3), ("lstm", 1, 256, 4),
                                ("gru", 1, 256, 3)):
            launch = config.choose(cell, B, H, dtype, config.H100, "bwd")
            # (at B16 over batch tiles of 8 rows: test_a_16bit_backward_over_eight_batch_rows)
            assert (launch.layout, launch.RESIDENT, launch.KP, launch.NKP, launch.num_warps) == (
                "grid", True, 256, nkp, 8), (cell, B, H, launch)
            found = config.candidates(cell, B, H, dtype, config.H100, "bwd")
            one = [c for c in found if c.RESIDENT and c.NKP == 1]
            split16 = [c for c in found if c.RESIDENT and c.NKP == nkp and c.BLOCK_B == 16]
            assert one and one[0].KP == 1024 and split16, (one, split16)
            assert min(c.us_per_step for c in split16) < min(c.us_per_step for c in one), (split16, one)
        for cell in ("lstm", "gru"):
            assert config.choose(cell, 8, 128, dtype, config.H100, "bwd").layout == "cta"
    assert config.resident_pieces_for("bwd", 768, 16, G=1) == (1024, 1)
    assert config.resident_pieces_for("bwd", 768, 16, G=1, split=True) == (256, 3)
    assert config.resident_pieces_for("bwd", 128, 16, G=4, split=True) is None  # one piece of 512: not offered
    # no one piece fits (GRU B16·H768): its pieces as before, split already; nothing more offered
    assert config.resident_pieces_for("bwd", 768, 16, G=3) == (256, 9)
    assert config.resident_pieces_for("bwd", 768, 16, G=3, split=True) is None


#: the anchors' choices for LSTM bf16 (layout, grid, BLOCK_B, BLOCK_N, resident), pinned so
#: that a change of the tuning table or the model is deliberate (benchmarks/NOTES.md); the
#: machine model's round trip per streamed chunk (issue 29) favours fewer, wider tiles
PINNED = {
    (1, 256, "fwd"): ("grid", (32, 1, 1), 16, 8, True),
    (1, 256, "bwd"): ("grid", (32, 1, 1), 16, 8, True),
    (8, 128, "fwd"): ("cta", (1, 1, 1), 8, 128, True),  # 8 warps, no exchange: 596 insts, 1.15 µs/step from its SASS (grid 1.73)
    # cta since its inputs load two steps ahead (model.CTA_PREFETCH_TRIPS 1 -> 0.5; model 2.36 µs/step, grid
    # 2.50): its SASS reads 0.5 round trips, 620 insts, 2.18 µs/step, the grid pick's 2 and 3.14 (2026-12-07)
    (8, 128, "bwd"): ("cta", (1, 1, 1), 8, 128, True),
    (16, 768, "fwd"): ("grid", (96, 1, 1), 16, 8, True),
    # 12 pieces of 256 split in K over two batch tiles of 8 rows, W on the M side: 243 regs, no spill, 2 round
    # trips (in one 16-row tile: 255 regs, two sweeps of loads, 4)
    (16, 768, "bwd"): ("grid", (48, 2, 1), 8, 16, True),
    (64, 1024, "fwd"): ("grid", (32, 4, 1), 16, 32, False),
    (64, 1024, "bwd"): ("grid", (32, 4, 1), 16, 32, False),
    # W_hh resident in a wide tile (config.resident_wide; two pieces of 256): 2 round trips, 255 regs, no spill
    (256, 512, "fwd"): ("grid", (16, 8, 1), 32, 32, True),
    (256, 512, "bwd"): ("grid", (8, 16, 1), 16, 32, False),
}
#: contract v2's model-level cases (benchmarks/NOTES.md): the bidirectional encoder's layer
#: (fp16, both directions in one launch) and a projection (H1024·P256), keyed (B, H, P, D, direction)
PINNED_V2 = {
    (32, 512, 0, 2, "fwd"): ("grid", (64, 1, 2), 32, 8, True),  # 4 pieces of 128 x 32: 200 regs, no spill
    # 8 pieces of 256 split in K over batch tiles of 8 rows: 200 regs, no spill, 2 round trips, 3.16 µs per launch
    # from its SASS (the 16-row tile's: 232 regs, 3.69)
    (32, 512, 0, 2, "bwd"): ("grid", (32, 4, 1), 8, 16, True),
    (64, 1024, 256, 1, "fwd"): ("grid", (32, 4, 1), 16, 16, False),
    (64, 1024, 256, 1, "bwd"): ("grid", (32, 4, 1), 16, 32, False),
}


@pytest.mark.parametrize("B,H,direction", sorted(PINNED))
def test_anchor_choices_are_pinned(B, H, direction):
    launch = config.choose("lstm", B, H, torch.bfloat16, config.H100, direction)
    got = (launch.layout, launch.grid, launch.BLOCK_B, launch.BLOCK_N, launch.RESIDENT)
    assert got == PINNED[(B, H, direction)]


@pytest.mark.parametrize("B,H,P,D,direction", sorted(PINNED_V2))
def test_v2_choices_are_pinned(B, H, P, D, direction):
    launch = config.choose("lstm", B, H, torch.float16, config.H100, direction, proj=P, directions=D)
    got = (launch.layout, launch.grid, launch.BLOCK_B, launch.BLOCK_N, launch.RESIDENT)
    assert got == PINNED_V2[(B, H, P, D, direction)]


def test_the_model_streams_as_many_chunks_ahead_as_the_kernels():
    """model.py charges one round trip per STREAM_AHEAD streamed chunks; steps.py (which
    needs Triton) keeps that many slots in flight."""
    from fusedrnn.ops.triton import model, steps
    assert model.STREAM_AHEAD == steps.STREAM_AHEAD.value


def test_the_old_name_of_the_cta_layout_is_accepted_with_a_warning(monkeypatch):
    """Triton's `cta` layout (CUDA's name for the same tier) was `carry`: for one release the old
    name still forces it, as an argument or through FUSEDRNN_TRITON_LAYOUT, with a FutureWarning."""
    assert config.LAYOUTS == ("cta", "grid", "solo")
    with pytest.warns(FutureWarning, match="the layout 'carry' is now called 'cta'"):
        assert config.choose("gru", 3, 17, torch.bfloat16, config.H100, "fwd", "carry").layout == "cta"
    monkeypatch.setitem(config.TUNING, "layout", "carry")  # as read from FUSEDRNN_TRITON_LAYOUT
    with pytest.warns(FutureWarning, match="accepted until the next release"):
        assert config.choose("gru", 3, 17, torch.bfloat16, config.H100, "fwd").layout == "cta"
    with pytest.raises(ValueError, match="unknown layout 'cary'; expected auto or one of cta, grid, solo"):
        config.choose("gru", 3, 17, torch.bfloat16, config.H100, "fwd", "cary")


@pytest.mark.parametrize("cell,dtype", [("rnn_tanh", torch.bfloat16), ("rnn_tanh", torch.float32),
                                        ("gru", torch.bfloat16), ("gru_reset_before", torch.float16)])
@pytest.mark.parametrize("direction", ("fwd", "bwd"))
def test_small_batch_runs_in_one_cta_without_exchange(cell, dtype, direction):
    """Issue 29 at B8·H128: the grid layout paid a flag round trip and the exchange load it
    guards every step (1.05 µs of its 1.66 predicted for the RNN forward). One program per
    batch tile owning every unit and all of W_hh exchanges nothing; at B <= 8 it runs 8 batch
    rows (mma.sync n8), where 16 doubled the pointwise work on padding. The model (fit to its
    SASS: one round trip, its CTA barriers, its instructions) predicts it faster, so it is picked."""
    launch = config.choose(cell, 8, 128, dtype, config.H100, direction)
    assert launch.layout == "cta" and launch.grid[:2] == (1, 1) and not launch.BARRIER, launch
    assert launch.BLOCK_B == 8 and launch.RESIDENT
    grid = [c for c in config.candidates(cell, 8, 128, dtype, config.H100, direction) if c.layout == "grid"]
    assert grid and launch.us_per_step < min(c.us_per_step for c in grid)


def test_cta_eight_rows_only_where_the_batch_fits_them():
    for B, want in ((1, 8), (3, 8), (8, 8), (9, 16), (16, 16)):
        found = {c.BLOCK_B for c in config.candidates("rnn_tanh", B, 64, torch.bfloat16, config.H100, "fwd", "cta")}
        assert min(found) == want, (B, found)


def test_cta_keeps_w_hh_where_its_registers_hold_it():
    """The cta layout's W_hh per thread is bounded (TUNING cta_w_per_thread): the RNN B1·H256
    forward at 4 warps (512 elements each) spilled 616 bytes compiled for sm_90; at 8 warps
    (256) it does not, nor does the LSTM B8·H128 backward at 8 rows and 8 warps (its 16-row
    tile spilled); fp32 keeps tf32x3's two halves: the RNN's 128 x 128 only at 8 warps."""
    rnn = config.choose("rnn_tanh", 1, 256, torch.bfloat16, config.H100, "fwd")
    assert rnn.layout == "cta" and rnn.num_warps == 8
    assert config.cta_w_elems("rnn_tanh", "fwd", 256, 256) > config.TUNING["cta_w_per_thread"] * 128
    lstm = config.candidates("lstm", 8, 128, torch.bfloat16, config.H100, "bwd", "cta")
    assert [(c.BLOCK_B, c.num_warps) for c in lstm] == [(8, 8)]
    assert not config.candidates("lstm", 16, 128, torch.bfloat16, config.H100, "bwd", "cta")
    fp32 = config.candidates("rnn_tanh", 8, 128, torch.float32, config.H100, "fwd", "cta")
    assert [(c.BLOCK_B, c.num_warps) for c in fp32] == [(8, 8)]
    assert not config.candidates("rnn_tanh", 1, 256, torch.float32, config.H100, "fwd", "cta")


def test_model_charges_solo_its_exchange_through_memory():
    """The solo layout's state goes through memory between its CTA barriers: the SASS of the
    GRU B5·H7 bf16 solo kernels reads 2 round trips forward and 3 backward where the model
    charged its chunks' 1 and 2, so it ranked solo (2.05 µs predicted from the SASS) above
    the cta layout (0.64) at such tiny sizes."""
    args = dict(n_programs_per_tile=1, n_tiles=1, block_n=8, block_b=16, gate_slots=4, kp=16, nkp=1,
                resident=False, B=5, H=7, G=3, bits=16, wgmma=False)
    assert model.step_us("solo", direction="fwd", **args)["round_trips"] == 2
    assert model.step_us("solo", direction="bwd", **args)["round_trips"] == 3
    for direction in ("fwd", "bwd"):
        assert config.choose("gru", 5, 7, torch.bfloat16, config.H100, direction).layout == "cta"
