"""Contract v2 at the backend level, part 1: the LSTM projection (proj_size) in the Triton
kernels against the float64 reference, values and every gradient (gx, h0, c0, W_hh, b_hh
and W_hr), in every layout that runs it: cta and solo as the interpreter picks them,
the barrier grid with its programs in threads (tests/support/interpreter_threads.py). Odd H and
P < H, batch tails, lengths, reverse, T=1, fp32/bf16/fp16.

`check_v2` is the checker tests/test_triton_directions.py uses as well: it calls the
backend's forward and backward directly (as fusedrnn/ops/library.py does), forms dW_hh
and db_hh from d_gh and the state entering each step as the contract says, and compares
each direction with its own float64 reference run (direction 1 reversed).
"""
from __future__ import annotations


import pytest
import torch

from fusedrnn.ops import triton as tri

from support.triton_projection import check_v2, forced, make_v2_args, structure, structures


#: (T, B, H, P, lengths, reverse, dtype, bias): odd H and P, P of 1, batch tails, T=1
CASES = [
    (6, 3, 17, 5, True, False, torch.float32, True),
    (1, 3, 17, 5, False, True, torch.bfloat16, True),
    (7, 1, 24, 16, True, True, torch.float16, False),
    (5, 3, 9, 1, True, False, torch.bfloat16, True),
    (4, 20, 33, 7, True, True, torch.float32, False),
    (6, 2, 12, 11, False, False, torch.float16, True),
]


def case_id(c):
    T, B, H, P, lengths, reverse, dtype, bias = c
    return f"T{T}-B{B}-H{H}-P{P}-{'len' if lengths else 'full'}-{'rev' if reverse else 'fwd'}-{str(dtype)[6:]}" + \
        ("" if bias else "-nobias")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_projection_matches_reference(case):
    """The layouts the choice code picks here (interpreter: cta forward, solo backward)."""
    T, B, H, P, lengths, reverse, dtype, bias = case
    check_v2("lstm", T, B, H, P, 1, dtype, lengths, reverse, bias, seed=T + B + H + P)


#: (B, H, P) where the structures below exist on SMALL_DEVICE
SHAPES = ((3, 40, 12), (20, 40, 9), (3, 17, 6))


def forced_pairs(cell, P_of, D, dtype):
    """(id, B, H, P, fwd launch, bwd launch): each forward structure once, each backward
    structure once (paired with forward ones in turn)."""
    fwd, bwd = {}, {}
    for B, H, P in SHAPES:
        p = P_of(P)
        for k, c in structures(cell, B, H, p, D, dtype, "fwd").items():
            fwd.setdefault(k, (B, H, p, c))
        for k, c in structures(cell, B, H, p, D, dtype, "bwd").items():
            bwd.setdefault(k, (B, H, p, c))
    out = []
    bkeys = sorted(bwd)
    for i, k in enumerate(sorted(fwd)):
        B, H, p, f = fwd[k]
        kb = next((b for b in bkeys[i % len(bkeys):] + bkeys if bwd[b][:3] == (B, H, p)), None)
        if kb is None:
            kb = next(b for b, v in bwd.items() if v[:3] == (B, H, p))
        out.append((f"fwd-{k}/bwd-{kb}", B, H, p, f, bwd[kb][3]))
    for kb in bkeys:  # backward structures no forward pairing reached
        if not any(o[0].endswith("/bwd-" + kb) for o in out):
            B, H, p, b = bwd[kb]
            f = next(v[3] for v in fwd.values() if v[:3] == (B, H, p))
            out.append((f"fwd-{structure(f)}/bwd-{kb}", B, H, p, f, b))
    return out


PAIRS = forced_pairs("lstm", lambda P: P, 1, torch.bfloat16)


def test_every_structure_runs_the_projection():
    fwd = {p[0].split("/")[0] for p in PAIRS}
    bwd = {p[0].split("/")[1] for p in PAIRS}
    assert {"fwd-cta", "fwd-solo-streamed-tiles", "fwd-grid-resident-tile", "fwd-grid-streamed-tile",
            "fwd-grid-streamed-tiles"} <= {f.replace("-batch-tiles", "") for f in fwd}, fwd
    assert {"bwd-solo-streamed-tiles", "bwd-grid-streamed-tile", "bwd-grid-streamed-tiles"} <= \
        {b.replace("-batch-tiles", "") for b in bwd}, bwd
    assert any("batch-tiles" in p[0] and p[4].BARRIER for p in PAIRS)


@pytest.mark.parametrize("name,B,H,P,fwd,bwd", PAIRS, ids=[p[0] for p in PAIRS])
def test_projection_in_every_layout(monkeypatch, name, B, H, P, fwd, bwd):
    dtype = torch.float32 if not (fwd.RESIDENT or bwd.RESIDENT) and "tiles" in name else torch.bfloat16
    with forced(monkeypatch, fwd, bwd):
        check_v2("lstm", 5, B, H, P, 1, dtype, lengths=True, reverse=B % 2 == 1, seed=B + H)


def test_backend_refuses_bad_shapes():
    """The kernels trust the sizes: the launcher checks them first (RuntimeError, no launch)."""
    args, _ = make_v2_args("lstm", 3, 2, 8, 4, 1, torch.float32, False, True)
    a = dict(args)
    with pytest.raises(RuntimeError, match="w_hr has shape"):
        tri.forward("lstm", a["gx"], a["h0"], a["c0"], a["w_hh"], a["b_hh"], None, False, False, a["w_hr"].t().contiguous())
    with pytest.raises(RuntimeError, match="no w_hr"):
        tri.forward("lstm", a["gx"], a["h0"], a["c0"], a["w_hh"], a["b_hh"], None, False, False)
    with pytest.raises(RuntimeError, match="w_hh has shape"):
        tri.forward("lstm", a["gx"], a["h0"], a["c0"], a["w_hh"][:, :3].contiguous(), a["b_hh"], None, False, False,
                    a["w_hr"])
