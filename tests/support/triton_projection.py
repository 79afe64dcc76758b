"""Contract-v2 arguments (LSTM projection, both directions in one call) for the Triton recurrence, its run
against the float64 reference, and launches forced per layout."""
import contextlib

import torch

from fusedrnn.ops import reference
from fusedrnn.ops import triton as tri
from fusedrnn.ops.common import GATES, prev_states, weight_grads
from fusedrnn.ops.triton import config

from support import interpreter_threads
from support.triton_layouts import SMALL_DEVICE
from support.triton_recurrence import DEVICE



def make_v2_args(cell, T, B, H, P, D, dtype, lengths, bias, seed=0, device=DEVICE):
    """gx, h0, c0, w_hh, b_hh, w_hr in contract v2's shapes (P None: no projection), and lengths."""
    G, Pw = GATES[cell], P or H
    g = torch.Generator().manual_seed(seed)
    lead = (D,) if D > 1 else ()

    def t(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)

    args = dict(gx=t(T, B, D * G * H), h0=t(*lead, B, Pw), c0=t(*lead, B, H) if cell == "lstm" else None,
                w_hh=t(*lead, G * H, Pw, scale=Pw ** -0.5), b_hh=t(*lead, G * H) if bias else None,
                w_hr=t(*lead, Pw, H, scale=H ** -0.5) if P else None)
    lens = None
    if lengths:
        lens = torch.randint(1, T + 1, (B,), generator=g)
        lens[0] = T
    return args, lens


def _per_direction(a, d, D):
    return None if a is None else (a[d] if D > 1 else a)


def reference_run(cell, args, lens, reverse, D, cots, dtype):
    """Outputs and gradients of sum(out * cot) for each direction from fusedrnn.ops.reference
    run in `dtype` (float64: the truth), as float64 tensors named like `triton_run`'s."""
    G = GATES[cell]
    H = args["gx"].shape[2] // (D * G)
    P = args["h0"].shape[-1]
    out = {}
    for d in range(D):
        leaves = dict(gx=args["gx"][..., d * G * H:(d + 1) * G * H], **{
            k: _per_direction(args[k], d, D) for k in ("h0", "c0", "w_hh", "b_hh", "w_hr")})
        leaves = {k: (v.detach().to(dtype).requires_grad_() if v is not None else None) for k, v in leaves.items()}
        outs = reference.recurrence(cell, leaves["gx"], leaves["h0"], leaves["c0"], leaves["w_hh"], leaves["b_hh"],
                                    lens, reverse or d == 1, w_hr=leaves["w_hr"])
        names = ("y", "hT", "cT")[:len(outs)]
        cot = dict(y=cots["y"][..., d * P:(d + 1) * P], hT=_per_direction(cots["hT"], d, D),
                   cT=_per_direction(cots["cT"], d, D))
        loss = sum((o.double() * cot[n].double()).sum() for n, o in zip(names, outs))
        present = [k for k, v in leaves.items() if v is not None]
        grads = torch.autograd.grad(loss, [leaves[k] for k in present])
        for n, o in zip(names, outs):
            out.setdefault(n, []).append(o.detach().double())
        for k, gr in zip(present, grads):
            out.setdefault("d_" + k, []).append(gr.double())
    cat = {"y": -1, "d_gx": -1}
    return {k: (torch.cat(v, cat[k]) if k in cat else (torch.stack(v) if D > 1 else v[0])) for k, v in out.items()}


def triton_run(cell, args, lens, reverse, D, cots):
    """The same through the Triton backend's forward and backward (contract v2)."""
    G = GATES[cell]
    lens32 = lens.to(DEVICE, torch.int32) if lens is not None else None
    a = args
    y, hT, cT, saved = tri.forward(cell, a["gx"], a["h0"], a["c0"], a["w_hh"], a["b_hh"], lens32, reverse, True,
                                   a["w_hr"])
    outs = tri.backward(cell, cots["y"].to(y.dtype), cots["hT"].to(hT.dtype),
                        cots["cT"].to(cT.dtype) if cT is not None else None, a["gx"], a["h0"], a["c0"], a["w_hh"],
                        a["b_hh"], lens32, reverse, y, saved, a["w_hr"])
    assert len(outs) == (5 if a["w_hr"] is not None else 4)
    d_gx, d_gh, dh0, dc0 = outs[:4]
    H = a["gx"].shape[2] // (D * G)
    P = a["h0"].shape[-1]
    res = dict(y=y, hT=hT, d_gx=d_gx, d_h0=dh0)
    if cell == "lstm":
        res.update(cT=cT, d_c0=dc0)
    if a["w_hr"] is not None:
        res["d_w_hr"] = outs[4]
    dws, dbs = [], []
    for d in range(D):
        h_prev = prev_states(y[..., d * P:(d + 1) * P], _per_direction(a["h0"], d, D), lens32, reverse or d == 1)
        dw, db = weight_grads(d_gh[..., d * G * H:(d + 1) * G * H].contiguous(), h_prev, a["b_hh"] is not None,
                              a["w_hh"].dtype)
        dws.append(dw)
        dbs.append(db)
    res["d_w_hh"] = torch.stack(dws) if D > 1 else dws[0]
    if a["b_hh"] is not None:
        res["d_b_hh"] = torch.stack(dbs) if D > 1 else dbs[0]
    return {k: v.detach().double().cpu() for k, v in res.items()}


def check_v2(cell, T, B, H, P, D, dtype, lengths, reverse=False, bias=True, seed=0):
    """Assert the backend matches the float64 reference within the dtype's rule (that of
    tests/test_triton_recurrence.py); returns the errors."""
    args, lens = make_v2_args(cell, T, B, H, P, D, dtype, lengths, bias, seed)
    g = torch.Generator().manual_seed(seed + 1)
    Pw = P or H
    lead = (D,) if D > 1 else ()
    cots = dict(y=torch.randn(T, B, D * Pw, generator=g, dtype=torch.float64),
                hT=torch.randn(*lead, B, Pw, generator=g, dtype=torch.float64),
                cT=torch.randn(*lead, B, H, generator=g, dtype=torch.float64) if cell == "lstm" else None)
    cots = {k: (v.to(DEVICE) if v is not None else None) for k, v in cots.items()}
    ours = triton_run(cell, args, lens, reverse, D, cots)
    truth = {k: v.cpu() for k, v in reference_run(cell, args, lens, reverse, D, cots, torch.float64).items()}
    assert set(ours) == set(truth), (set(ours), set(truth))
    err = {k: (ours[k] - truth[k]).abs().max().item() for k in truth}
    if dtype == torch.float32:
        bound = {k: 3e-5 * (1.0 + truth[k].abs().max().item()) for k in truth}
    else:  # no worse than twice the error the reference itself makes run in this dtype
        ref = {k: v.cpu() for k, v in reference_run(cell, args, lens, reverse, D, cots, dtype).items()}
        bound = {k: 2.0 * (ref[k] - truth[k]).abs().max().item() + 1e-6 * (1.0 + truth[k].abs().max().item())
                 for k in truth}
    bad = {k: (err[k], bound[k]) for k in truth if not err[k] <= bound[k]}
    assert not bad, f"error above bound (err, bound): {bad}"
    return err


@contextlib.contextmanager
def layout(monkeypatch, name):
    """Force a layout through the documented knob (where it can run; grid programs run in threads)."""
    monkeypatch.setitem(config.TUNING, "layout", name)
    monkeypatch.setitem(config.TUNING, "spin_limit", 1 << 16)
    if name == "grid" and config.INTERPRET:
        with interpreter_threads.concurrent_programs(timeout_s=120):
            interpreter_threads.self_test()
            yield
    else:
        yield


def structure(launch: config.Launch) -> str:
    parts = [launch.layout]
    if launch.layout != "cta":
        parts.append("resident" if launch.RESIDENT else "streamed")
        parts.append("tiles" if launch.N_TILES > 1 else "tile")
    if launch.grid[1] > 1:
        parts.append("batch-tiles")
    return "-".join(parts)


def structures(cell, B, H, P, D, dtype, direction, limits=SMALL_DEVICE):
    """structure -> the choice code's smallest candidate of it on a small device."""
    seen = {}
    for name in config.LAYOUTS:
        for c in config.candidates(cell, B, H, dtype, limits, direction, name, proj=P, directions=D):
            key = structure(c)
            if c.launches == 1 and (key not in seen or c.grid[0] * c.grid[1] < seen[key].grid[0] * seen[key].grid[1]):
                seen[key] = c
    return seen


@contextlib.contextmanager
def forced(monkeypatch, fwd, bwd):
    """The launcher gets these launches (grid programs in threads under the interpreter)."""
    monkeypatch.setattr(config, "choose", lambda *a, **k: fwd if (a[5:6] or [k.get("direction")])[0] == "fwd" else bwd)
    with layout(monkeypatch, "grid" if fwd.BARRIER or bwd.BARRIER else "auto"):
        yield
