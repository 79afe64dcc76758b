"""Running the Triton recurrence in a forced layout: a device small enough for every structure, the
launch forced, and grid programs in threads under the interpreter."""
import contextlib

import pytest
import torch

from fusedrnn.cell_table import GRU_RESET_BEFORE
from fusedrnn.ops.triton import config

from support import interpreter_threads

SMALL_DEVICE = config.DeviceLimits(6, 227 * 1024, 65536)
SHAPES = ((3, 17), (3, 40), (20, 40))  # (B, H): tails, odd H, several pieces/tiles/batch tiles


@pytest.fixture(scope="module")
def concurrent():
    """Programs in threads under the interpreter (checked by a handshake kernel first)."""
    if not config.INTERPRET:
        yield
        return
    with interpreter_threads.concurrent_programs(timeout_s=120):
        interpreter_threads.self_test()
        yield


def for_direction(launch: config.Launch, cell: str, H: int, direction: str) -> config.Launch:
    """The forced launch for one direction: a resident grid backward's pieces of KP cover the
    G*H rows of its gates (steps.resident_w_bwd; the reset-before GRU's r and z:
    config.resident_bwd_gates), the forward's only H."""
    if not launch.RESIDENT or launch.CARRY or direction == "fwd":
        return launch
    return launch._replace(NKP=-(-config.resident_bwd_gates(cell) * H // launch.KP))


@contextlib.contextmanager
def forced(monkeypatch, launch):
    def choose(cell, B, H, dtype, limits=None, direction="fwd", *args, **kwargs):
        return for_direction(launch, cell, H, direction)
    monkeypatch.setattr(config, "choose", choose)
    monkeypatch.setitem(config.TUNING, "spin_limit", 1 << 16)
    yield


def structure(launch: config.Launch) -> str:
    parts = [launch.layout]
    if launch.layout != "cta":
        parts.append("resident" if launch.RESIDENT else "streamed")
        if launch.RESIDENT and launch.NKP > 1:
            parts.append("pieces")
        if launch.N_TILES > 1:
            parts.append("tiles")
    return "-".join(parts)


def forced_launches(cell: str, batch_tiles: bool) -> dict:
    """structure -> (B, H, launch): the smallest candidate of each structure, in one
    batch tile or (batch_tiles) in several where the structure has such a candidate."""
    seen = {}
    for B, H in SHAPES:
        for layout in config.LAYOUTS:
            for c in config.candidates(cell, B, H, torch.bfloat16, SMALL_DEVICE, "fwd", layout):
                key, size = structure(c), ((c.grid[1] > 1) != batch_tiles, c.grid[0] * c.grid[1])
                if key not in seen or size < seen[key][0]:
                    seen[key] = (size, (B, H, c))
    out = {k: v for k, (_, v) in seen.items()}
    if "grid-resident" in out and "grid-resident-pieces" not in out:
        # the choice code takes one piece wherever one fits (config.resident_pieces), so no
        # candidate at these sizes has several: the same launch cut into 16-wide pieces runs them
        B, H, c = out["grid-resident"]
        out["grid-resident-pieces"] = (B, H, c._replace(KP=16, NKP=-(-H // 16)))
    return out


def quick_launches(cell: str) -> dict:
    """forced_launches(cell) in one batch tile, with several tiles per grid program from a 2-SM
    device at B=3 (far quicker in the interpreter than the 6-SM device's B=20)."""
    found = forced_launches(cell, batch_tiles=False)
    two_sms = config.DeviceLimits(2, 227 * 1024, 65536)
    found["grid-streamed-tiles"] = next((3, 17, c) for c in config.candidates(cell, 3, 17, torch.float32, two_sms,
                                                                              "fwd", "grid") if c.N_TILES > 1)
    return found


def resident_backward_launches():
    """(forward, backward) of the H100's grid candidates at B3·H16 bf16 with W_hh resident: the
    backward's one piece of 32 holds r's and z's rows (2H; the n gate's rows are a piece of their
    own), where a piece over all three gates' 48 took 64, a third of it zeros, and spilled at H256."""
    def pick(direction):
        found = config.candidates(GRU_RESET_BEFORE, 3, 16, torch.bfloat16, config.H100, direction, "grid")
        return next(c for c in found if c.RESIDENT)
    return pick("fwd"), pick("bwd")
