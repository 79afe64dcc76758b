"""Every layout the Triton choice code can pick, forced onto small grids (2-8 programs)
and compared with the float64 reference: values and every gradient, for every cell,
in fp32/bf16/fp16, with lengths and reverse, batch tails (B=3, B=20 in two batch tiles)
and odd H.

Without a GPU the programs of a launch run concurrently in the interpreter
(tests/support/interpreter_threads.py), so the grid layout's barrier, its exchange through
memory and its indexing for program index > 0 execute on the CPU: a broken barrier or
a wrong index fails here, not on the first GPU run. With a GPU the same cases run on it.
The configurations are the choice code's own candidates (`config.candidates`) for a
device with 6 SMs (16-bit, where every structure exists), one per distinct structure (layout, resident W_hh in one or several
pieces or streamed, several tiles per program, several batch tiles).
"""
from __future__ import annotations


import pytest
import torch

from fusedrnn.ops.triton import config
from support.triton_recurrence import check_against_reference

from support import interpreter_threads
from support.triton_layouts import SMALL_DEVICE, for_direction, forced, forced_launches, structure

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


LAUNCHES = {(cell, tiles): forced_launches(cell, tiles) for cell in CELLS for tiles in (False, True)}
CASES = []
for _j, _cell in enumerate(CELLS):
    for _i, _key in enumerate(sorted(LAUNCHES[_cell, False])):
        _tiles = bool((_i + _j) % 2)  # alternate one and several batch tiles
        _B, _H, _launch = LAUNCHES[_cell, _tiles][_key]
        # resident layouts run in 16-bit here (the choice code keeps an fp32 W_hh resident only in a
        # forward's narrow pieces and a backward's split ones: test_fp32_keeps_w_hh_resident_as_chosen)
        _dtype = DTYPES[1 + (_i + _j) % 2] if _launch.RESIDENT else DTYPES[(_i + _j) % 3]
        # the launch by its structure's name: the default run's sample covers names, not each field
        CASES.append(pytest.param(_cell, _key, _tiles, _dtype, _i % 2 == 0, (_i + _j) % 3 != 1,
                                  id=f"{_cell}-{_key}-{_launch.grid[0]}x{_launch.grid[1]}-{str(_dtype)[6:]}"))


def launch_of(param):
    cell, key, tiles = param.values[:3]
    return LAUNCHES[cell, tiles][key][2]


def test_every_structure_is_covered():
    for cell in CELLS:
        keys = {structure(launch_of(p)) for p in CASES if p.values[0] == cell}
        assert keys == {"cta", "grid-resident", "grid-resident-pieces", "grid-streamed", "grid-streamed-tiles",
                        "solo-streamed", "solo-streamed-tiles"}, keys
    for layout in config.LAYOUTS:  # each layout also runs with several batch tiles
        assert any(launch_of(p).layout == layout and launch_of(p).grid[1] > 1 for p in CASES), layout
    assert all(2 <= launch_of(p).grid[0] * launch_of(p).grid[1] <= 8 for p in CASES if launch_of(p).BARRIER)


@pytest.mark.sampled
@pytest.mark.parametrize("cell,key,batch_tiles,dtype,lengths,reverse", CASES)
def test_layout_matches_reference(concurrent, monkeypatch, cell, key, batch_tiles, dtype, lengths, reverse):
    B, H, launch = LAUNCHES[cell, batch_tiles][key]
    with forced(monkeypatch, launch):
        check_against_reference(cell, 6, B, H, lengths, reverse, dtype, bias=True, seed=B + H)


@pytest.mark.parametrize("cell", CELLS)
def test_barrier_grid_one_step(concurrent, monkeypatch, cell):
    """T=1: every program's indexing (program index > 0 along the units and the batch),
    forward and backward, with nothing to wait for but the final barrier."""
    B, H, launch = forced_launches(cell, batch_tiles=True)["grid-resident-pieces"]
    assert launch.grid[0] > 1 and launch.grid[1] > 1
    with forced(monkeypatch, launch):
        check_against_reference(cell, 1, B, H, lengths=False, reverse=False, dtype=torch.float32, bias=True)


@pytest.mark.parametrize("cell", CELLS)
def test_fp32_keeps_w_hh_resident_as_chosen(concurrent, monkeypatch, cell):
    """Issue 29: fp32 keeps W_hh resident where the choice code now picks it (it streamed
    before): the forward in narrow pieces (config.resident_pieces_fp32; at B8, 8 padded rows
    of 16: pieces of 32, the second partial at H48), the backward in pieces of 128 over all
    G*H rows split in K over 8 warps (LSTM, GRU: two pieces, the second partial;
    steps.contract_split; the RNN's 48 rows fit one piece, which streams). One program per 8
    units. Values and every gradient, lengths, reversed."""
    B, H = 8, 48
    launches = {d: config.choose(cell, B, H, torch.float32, SMALL_DEVICE, d, "grid") for d in ("fwd", "bwd")}
    fwd, bwd = launches["fwd"], launches["bwd"]
    assert (fwd.layout, fwd.RESIDENT, fwd.KP, fwd.NKP, fwd.BLOCK_N, fwd.grid) == ("grid", True, 32, 2, 8, (6, 1, 1))
    assert (bwd.layout, bwd.BLOCK_N, bwd.grid) == ("grid", 8, (6, 1, 1))
    if cell.startswith("rnn"):
        assert not bwd.RESIDENT
    else:
        assert (bwd.RESIDENT, bwd.KP, bwd.NKP, bwd.num_warps) == (True, 128, 2, 8)
    monkeypatch.setattr(config, "choose", lambda cell, B, H, dtype, limits=None, direction="fwd", *a, **k:
                        launches[direction])
    monkeypatch.setitem(config.TUNING, "spin_limit", 1 << 16)
    check_against_reference(cell, 5, B, H, lengths=True, reverse=True, dtype=torch.float32, bias=True, seed=11)


@pytest.mark.parametrize("T,lengths", ((1, False), (3, True)))
def test_fp32_split_backward_awkward_sizes(concurrent, monkeypatch, T, lengths):
    """The fp32 LSTM backward's W_hh resident in two pieces of 128 over its 4 x 33 rows (the
    second holds 4), split in K, each piece held behind the last piece's load (tiles.behind):
    batch 3, odd H, T=1 and lengths, values and every gradient."""
    launches = {d: config.choose("lstm", 3, 33, torch.float32, SMALL_DEVICE, d, "grid") for d in ("fwd", "bwd")}
    bwd = launches["bwd"]
    assert (bwd.layout, bwd.RESIDENT, bwd.KP, bwd.NKP, bwd.num_warps) == ("grid", True, 128, 2, 8), bwd
    monkeypatch.setattr(config, "choose", lambda cell, B, H, dtype, limits=None, direction="fwd", *a, **k:
                        launches[direction])
    monkeypatch.setitem(config.TUNING, "spin_limit", 1 << 16)
    check_against_reference("lstm", T, 3, 33, lengths=lengths, reverse=not lengths, dtype=torch.float32, bias=True,
                            seed=5)


@pytest.mark.parametrize("cell,T,lengths", (("rnn_tanh", 1, False), ("rnn_relu", 3, True)))
def test_fp32_rnn_forward_split_in_k(concurrent, monkeypatch, cell, T, lengths):
    """The fp32 RNN forward with W_hh resident in pieces split in K over 8 warps (config.resident_split_fwd_ok,
    steps.contract_split; chosen at B16·H768, pieces of 128): here pieces of 16 over odd H (37: the third
    piece partial), batch 3, five programs, T=1 and lengths, reversed, values and every gradient."""
    lau = config.choose(cell, 3, 37, torch.float32, SMALL_DEVICE, "fwd", "grid")
    fwd = lau._replace(RESIDENT=True, SPLIT=True, KP=16, NKP=3, BLOCK_N=8, N_TILES=1, num_warps=8, grid=(5, 1, 1))
    bwd = config.choose(cell, 3, 37, torch.float32, SMALL_DEVICE, "bwd", "grid")
    assert fwd.constexprs()["SPLIT"] and not bwd.SPLIT
    launches = {"fwd": fwd, "bwd": bwd}
    monkeypatch.setattr(config, "choose", lambda cell, B, H, dtype, limits=None, direction="fwd", *a, **k:
                        launches[direction])
    monkeypatch.setitem(config.TUNING, "spin_limit", 1 << 16)
    check_against_reference(cell, T, 3, 37, lengths=lengths, reverse=not lengths, dtype=torch.float32, bias=True,
                            seed=7)


@pytest.mark.parametrize("cell,T,lengths", (("lstm", 3, True), ("gru", 1, False), ("rnn_tanh", 3, False)))
def test_backward_pieces_over_eight_batch_rows(concurrent, monkeypatch, cell, T, lengths):
    """The 16-bit backward over batch tiles of 8 rows, W_hh resident in pieces split in K with W on the
    M side (config.resident_bwd_n8, steps.contract_split; chosen at B16·H768, 16-unit tiles): here
    pieces of 16 over odd H (37: the last piece partial), batch 11 (two batch tiles, the second 3
    rows), three unit tiles, lengths or reversed, values and every gradient against float64."""
    G = config.GATES[config.CELLS[cell]]
    grid = next(c for c in config.candidates(cell, 11, 37, torch.bfloat16, SMALL_DEVICE, "bwd", "grid"))
    bwd = grid._replace(BLOCK_B=8, BLOCK_N=16, KP=16, NKP=-(-G * 37 // 16), RESIDENT=True, N_TILES=1, num_warps=8,
                        grid=(3, 2, 1))
    launches = {"fwd": config.choose(cell, 11, 37, torch.bfloat16, SMALL_DEVICE, "fwd", "grid"), "bwd": bwd}
    monkeypatch.setattr(config, "choose", lambda cell, B, H, dtype, limits=None, direction="fwd", *a, **k:
                        launches[direction])
    monkeypatch.setitem(config.TUNING, "spin_limit", 1 << 16)
    check_against_reference(cell, T, 11, 37, lengths=lengths, reverse=not lengths, dtype=torch.bfloat16, bias=True,
                            seed=9)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_cta_eight_rows_one_step(monkeypatch, cell, dtype):
    """The cta layout's 8-row batch tile (B <= 8: mma.sync n8) at T=1, batch 3 (5 padded rows)
    and odd H, reversed, forward and backward (the LSTM's too, which the choice code runs
    in 8 rows only)."""
    launch = config.candidates(cell, 3, 5, dtype, SMALL_DEVICE, "fwd", "cta")[0]
    assert launch.BLOCK_B == 8 and launch.grid[:2] == (1, 1)
    with forced(monkeypatch, launch):
        check_against_reference(cell, 1, 3, 5, lengths=False, reverse=True, dtype=dtype, bias=True, seed=3)
        check_against_reference(cell, 3, 3, 5, lengths=True, reverse=False, dtype=dtype, bias=True, seed=4)


@pytest.mark.skipif(not config.INTERPRET, reason="the threaded runner is for the interpreter (a GPU runs the layouts)")
def test_threaded_runner_fails_loudly_if_triton_changes(monkeypatch):
    """A Triton whose interpreter lacks what the runner patches, or a runner that no longer
    runs programs concurrently, must fail the tests with a message (never skip them)."""
    from triton.runtime import interpreter
    before = interpreter.GridExecutor.__call__
    with interpreter_threads.concurrent_programs():
        threaded_call = interpreter.GridExecutor.__call__
        interpreter.GridExecutor.__call__ = interpreter_threads.sequential_call()  # programs in turn again
        try:
            with pytest.raises(interpreter_threads.ThreadedInterpreterUnavailable,
                               match="did not run programs concurrently"):
                interpreter_threads.self_test(spins=2000)  # programs in turn: spins out, whatever the limit
        finally:
            interpreter.GridExecutor.__call__ = threaded_call
    assert interpreter.GridExecutor.__call__ is before
    monkeypatch.delattr(interpreter, "_implicit_cvt")
    with pytest.raises(interpreter_threads.ThreadedInterpreterUnavailable, match="internals changed.*_implicit_cvt"):
        with interpreter_threads.concurrent_programs():
            pass


@pytest.mark.skipif(not config.INTERPRET, reason="the threaded runner is for the interpreter (a GPU runs the layouts)")
def test_programs_rewrite_a_device_function_one_at_a_time(monkeypatch):
    """The first call of a jit function parses its source (ast.parse), which CPython 3.11 does not
    make thread-safe: programs reaching a device function together failed at random with
    "SystemError: AST constructor recursion depth mismatch". Inside the runner those rewrites
    take turns: here eight threads' first calls, each rewrite held open, never overlap."""
    import threading
    import time
    from triton.runtime import interpreter
    inside, most = [0], [0]
    real = interpreter.FunctionRewriter.rewrite_ast

    def slow_rewrite(self):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.02)  # long enough for every thread to arrive while one is inside
        inside[0] -= 1
        return real(self)

    monkeypatch.setattr(interpreter.FunctionRewriter, "rewrite_ast", slow_rewrite)
    fns = [interpreter.InterpretedFunction(_device_function) for _ in range(8)]
    rewritten = []
    with interpreter_threads.concurrent_programs():
        threads = [threading.Thread(target=lambda f=f: rewritten.append(f.rewrite()(2))) for f in fns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert rewritten == [3] * 8 and most[0] == 1


def _device_function(x):
    return x + 1


@pytest.mark.parametrize("cell", ("lstm", "gru", "gru_reset_before"))
def test_resident_backward_in_sweeps(concurrent, monkeypatch, cell):
    """The backward's resident pieces loaded in several sweeps, the last one partial
    (steps.contract_split; at LSTM B16·H768 10 pieces, then 2): here sweeps of 3 pieces, or 2
    where the pieces are 3 (the GRU with its reset gate before the product: its pieces hold the
    r and z rows, config.resident_bwd_gates; it also contracts the n gate's rows alone)."""
    import triton.language as tl

    from fusedrnn.ops.triton import steps
    B, H, launch = forced_launches(cell, batch_tiles=False)["grid-resident-pieces"]
    nkp = for_direction(launch, cell, H, "bwd").NKP
    sweep = 3 if nkp % 3 else 2
    assert nkp > sweep and nkp % sweep, nkp  # several sweeps, a partial last one
    monkeypatch.setattr(steps, "SWEEP_ELEMS", tl.constexpr(sweep * launch.KP * launch.BLOCK_B))
    with forced(monkeypatch, launch):
        check_against_reference(cell, 3, B, H, lengths=True, reverse=False, dtype=torch.bfloat16, bias=True)
