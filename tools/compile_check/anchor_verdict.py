"""The compile gate's closing lines: per dtype, on how many anchor rows (LSTM, GRU, RNN x
the five anchor shapes x fw and fwbw) the machine model, applied to the critical path read
from the compiled kernels, predicts fusedrnn faster than cuDNN, and the geometric mean of
cuDNN / ours; first for 'auto' (the faster backend per row), then per backend.

Per row: fw = the forward kernel's µs/step + the input GEMM outside the loop; fwbw = forward
+ backward + four GEMMs (input, dx, dW_ih, dW_hh), each GEMM at the machine model's GEMM
rate. cuDNN (docs/anchors.md, µs/step = ms x 1000 / T): its fastest dtype for the 16-bit
lines, its fp32 (TF32) for fp32.
"""
from __future__ import annotations

import json
import math
import sys

from benchmarks.anchors import _COLUMNS, _LAYER
from .rows import Row

CELLS = ("lstm", "gru", "rnn_tanh")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1}


def _picked(rows, backend, cell, dtype, B, H, direction) -> list:
    return [r for r in rows if r.backend == backend and r.cell == cell and r.dtype == dtype and r.B == B
            and r.H == H and r.direction == direction and r.predicted_us is not None and not r.error
            and r.variant in ("D1", "any", "per-step")]


def _recurrence(rows, backend, cell, dtype, B, H, direction):
    """µs/step of one direction's recurrence (one launch per step or the persistent kernel;
    the per-step tier's stage kernels added), or None if the gate has no such row."""
    picked = _picked(rows, backend, cell, dtype, B, H, direction)
    return sum(r.predicted_us for r in picked) if picked else None


def anchor_predictions(rows, m: dict) -> list[dict]:
    """One dict per (cell, shape, dtype, mode) the rows cover: ours per backend and cuDNN."""
    out = []
    for (cell, B, T, H), ms in _LAYER.items():
        if cell not in CELLS:
            continue
        cudnn = dict(zip(_COLUMNS, ms))
        for dtype in ("bf16", "fp16", "fp32"):
            bits = 32 if dtype == "fp32" else 16
            gemm = 2.0 * B * H * GATES[cell] * H / (m[f"gemm_tflops_{bits}"] * 1e6)
            for mode in ("fw", "fwbw"):
                ref = cudnn[("fp32", mode)] if bits == 32 else min(cudnn[(d, mode)] for d in ("fp32", "bf16", "fp16"))
                ours = {}
                for backend in ("triton", "cuda"):
                    f = _recurrence(rows, backend, cell, dtype, B, H, "fwd")
                    b = _recurrence(rows, backend, cell, dtype, B, H, "bwd")
                    if f is None or (mode == "fwbw" and b is None):
                        continue
                    ours[backend] = f + gemm if mode == "fw" else f + b + 4 * gemm
                if ours:
                    out.append(dict(cell=cell, B=B, T=T, H=H, dtype=dtype, mode=mode, ours=ours, gemm=gemm,
                                    cudnn=ref * 1000 / T, cudnn_dtype="fp32" if bits == 32 else min(
                                        ("fp32", "bf16", "fp16"), key=lambda d: cudnn[(d, mode)])))
    return out


def verdict_lines(rows, m: dict) -> list[str]:
    """`predicted: <dtype> beats cuDNN on N of M anchor rows, geomean G` for auto, then per backend."""
    preds = anchor_predictions(rows, m)
    lines = []
    for who in ("auto", "triton", "cuda"):
        for dtype in ("bf16", "fp16", "fp32"):
            ratios = []
            for p in preds:
                if p["dtype"] != dtype:
                    continue
                ours = min(p["ours"].values()) if who == "auto" else p["ours"].get(who)
                if ours is not None:
                    ratios.append(p["cudnn"] / ours)
            if not ratios:
                continue
            geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
            label = "" if who == "auto" else f" ({who})"
            lines.append(f"predicted{label}: {dtype} beats cuDNN on {sum(r > 1 for r in ratios)} of {len(ratios)} "
                         f"anchor rows, geomean {geo:.2f}")
    return lines


def _path_text(rows, backend, cell, dtype, B, H, direction) -> str:
    """'<rt> rt (<flags> flag), <bar> bar, <insts> insts: wait + sync + max(issue, mma)'."""
    parts = []
    for r in _picked(rows, backend, cell, dtype, B, H, direction):
        p = r.path or {}
        t = p.get("terms", {})
        parts.append(f"{r.round_trips} rt ({p.get('flag_round_trips', '?')} flag), {r.barriers} bar, "
                     f"{r.insts_per_step} insts: wait {t.get('wait', 0):.2f} + sync {t.get('sync', 0):.2f} + "
                     f"max(issue {t.get('issue', 0):.2f}, mma {t.get('mma', 0):.2f})"
                     + (f" + launch {t['launch']:.2f}" if "launch" in t else "")
                     + (f"; the planner's estimate {t['plan']:.2f} (loops' trips, passes, L2 bandwidth)"
                        if "plan" in t else ""))
    return "; ".join(parts) or "-"


def _bound(rows, backend, p) -> str:
    """What bounds a losing row: its largest term, and the floor of its exchange."""
    terms = {"wait": 0.0, "sync": 0.0, "issue": 0.0, "mma": 0.0, "launch": 0.0, "plan": 0.0}
    layouts = []
    for d in ("fwd",) + (("bwd",) if p["mode"] == "fwbw" else ()):
        for r in _picked(rows, backend, p["cell"], p["dtype"], p["B"], p["H"], d):
            for k in terms:
                terms[k] += (r.path or {}).get("terms", {}).get(k, 0.0)
            layouts.append(r.layout)
    big = max(terms, key=terms.get)
    cross_sm = any(lay.startswith(("grid", "solo")) for lay in layouts)
    floor = "floor: one cross-SM exchange per step" if cross_sm else "floor: no cross-SM exchange (one CTA/cluster)"
    return f"{big} {terms[big]:.2f} µs; {floor}"


def markdown(rows, m: dict) -> str:
    """benchmarks/NOTES.md's table: per anchor, cell, dtype and mode, each backend's
    predicted µs/step beside cuDNN, the critical path of its kernels, and for a predicted
    loss what bounds it."""
    lines = ["| cell | B·T·H | dtype | mode | backend | predicted µs/step | cuDNN µs/step | cuDNN / ours | "
             "critical path fwd (; bwd) | bound where it loses |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in anchor_predictions(rows, m):
        for backend, ours in sorted(p["ours"].items()):
            ratio = p["cudnn"] / ours
            path = _path_text(rows, backend, p["cell"], p["dtype"], p["B"], p["H"], "fwd")
            if p["mode"] == "fwbw":
                path += " ;; " + _path_text(rows, backend, p["cell"], p["dtype"], p["B"], p["H"], "bwd")
            lines.append(f"| {p['cell']} | {p['B']}·{p['T']}·{p['H']} | {p['dtype']} | {p['mode']} | {backend} | "
                         f"{ours:.2f} | {p['cudnn']:.2f} ({p['cudnn_dtype']}) | {ratio:.2f} | {path} | "
                         f"{_bound(rows, backend, p) if ratio < 1 else ''} |")
    return "\n".join(lines)


def load_rows(paths) -> list:
    """Rows from compile-gate --json files, or from critical_path's JSON lines (*.jsonl)."""
    out = []
    for path in paths:
        with open(path) as f:
            if not path.endswith(".jsonl"):
                out += [Row(**dict(d, grid=tuple(d.get("grid", ())))) for d in json.load(f)["rows"]]
                continue
            for line in f:
                d = json.loads(line)
                out.append(Row(d["backend"], "", d["cell"], d["dtype"], d["B"], d["H"], d["direction"],
                               "D1" if d["backend"] == "triton" else "any", d["launch"],
                               predicted_us=d["predicted_us"], round_trips=d["round_trips"], barriers=d["barriers"],
                               insts_per_step=d["insts_per_step"], extra_passes=d.get("extra_passes", 0),
                               path=dict(flag_round_trips=d.get("flag_round_trips"), terms=d.get("terms", {}))))
    return out


def main(argv=None) -> int:
    """python -m tools.compile_check.anchor_verdict ROWS.json [...]: the NOTES table and
    the verdict lines from compile-gate --json files."""
    from fusedrnn import machine
    rows = load_rows(sys.argv[1:] if argv is None else argv)
    m = machine.current()
    print(markdown(rows, m))
    print()
    for line in verdict_lines(rows, m):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
