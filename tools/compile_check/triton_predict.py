"""Predicted µs per step of fusedrnn's Triton kernels at the anchor shapes on an H100,
from the configuration the library's own choice code picks (`config.choose` on the
H100's limits) and the latency model it ranks with (fusedrnn/ops/triton/model.py), next
to cuDNN's fastest dtype from docs/anchors.md (benchmarks/anchors.py). Prints the Markdown
table of benchmarks/NOTES.md's Triton section:

    python -m tools.compile_check.triton_predict

Per row: the configuration, the model's terms (the floor: barrier, exchange of h or
d_gates through L2, W_hh streamed from L2, tensor-core time, pointwise, gx/y/saved over
HBM, and the input/weight GEMMs outside the recurrence at half of peak), the predicted
µs/step of fw (forward) and fwbw (forward + backward), and cuDNN's / ours (> 1: faster).
Then contract v2's model-level lines: the 2-layer bidirectional encoder (B32·T512·I256·H512
fp16) with both directions in one launch against the directions in turn and cuDNN, and an
LSTM projection (P = H/4) beside the same shape without one.
"""
from __future__ import annotations

import sys

from benchmarks.anchors import _COLUMNS, _LAYER, _MODEL

#: dense tensor-core peak for the GEMMs outside the loop (H100 SXM, TFLOP/s; half is assumed)
GEMM_TFLOPS = {16: 989.0, 32: 989.0 / 2}


def _launch_terms(cell, B, H, dtype, direction, proj=0, directions=1):
    """(Launch, the model's terms of one of its launches; "total" is per call step, all launches)."""
    import torch

    from fusedrnn.cell_table import GRU_RESET_BEFORE
    from fusedrnn.ops.triton import config, model
    from fusedrnn.ops.triton.cells import CELLS, GATES
    lau = config.choose(cell, B, H, dtype, config.H100, direction, proj=proj, directions=directions)
    G, GS = GATES[CELLS[cell]], config.gate_slots(cell)
    m_rows = GS * lau.BLOCK_N if direction == "fwd" else lau.BLOCK_N
    terms = model.step_us(lau.layout, lau.grid[0], lau.N_TILES, lau.BLOCK_N, lau.BLOCK_B, GS, lau.KP, lau.NKP,
                          lau.RESIDENT, B, H, G, torch.finfo(dtype).bits, direction,
                          config.uses_wgmma(m_rows, lau.BLOCK_B, lau.num_warps), proj=proj, kr=lau.KR,
                          directions=lau.grid[2], warps=lau.num_warps, second_phase=cell == GRU_RESET_BEFORE,
                          split=lau.SPLIT)
    terms["total"] *= lau.launches
    return lau, terms


def _describe(lau) -> str:
    w = f"W res {lau.NKP}x{lau.KP}" if lau.RESIDENT else f"W streamed k{lau.KP}"
    tiles = f"x{lau.N_TILES}" if lau.N_TILES > 1 else ""
    grid = "x".join(map(str, lau.grid if lau.grid[2] > 1 else lau.grid[:2]))
    proj = (" W_hr res" if lau.CARRY else f" W_hr streamed k{lau.KR}") if lau.PROJ else ""
    turns = f", {lau.launches} launches in turn" if lau.launches > 1 else ""
    return f"{lau.layout} {grid} bb{lau.BLOCK_B} bn{lau.BLOCK_N}{tiles} {w}{proj} {lau.num_warps}w{turns}"


def rows():
    import torch
    out = []
    for (cell, B, T, H), ms in _LAYER.items():
        cudnn = dict(zip(_COLUMNS, ms))
        for label, dtype in (("16-bit", torch.bfloat16), ("fp32", torch.float32)):
            bits = torch.finfo(dtype).bits
            G = {"lstm": 4, "gru": 3}.get(cell, 1)
            gemm = 2 * B * H * G * H / (GEMM_TFLOPS[bits] * 0.5 * 1e6)  # one (B,H)x(H,G*H) GEMM per step, µs
            fw_l, fw = _launch_terms(cell, B, H, dtype, "fwd")
            bw_l, bw = _launch_terms(cell, B, H, dtype, "bwd")
            pred = {"fw": fw["total"] + gemm, "fwbw": fw["total"] + bw["total"] + 4 * gemm}
            for mode in ("fw", "fwbw"):
                best_dtype = min(("fp32", "bf16", "fp16"), key=lambda d: cudnn[(d, mode)])
                best = cudnn[(best_dtype, mode)] * 1000 / T
                out.append(dict(cell=cell, B=B, T=T, H=H, dtypes=label, mode=mode,
                                fwd=_describe(fw_l), bwd=_describe(bw_l) if mode == "fwbw" else "",
                                terms_fwd=fw, terms_bwd=bw if mode == "fwbw" else None, gemm=gemm,
                                predicted=pred[mode], cudnn=best, cudnn_dtype=best_dtype, ratio=best / pred[mode]))
    return out


def _terms(t) -> str:
    return " + ".join(f"{k} {v:.2f}" for k, v in t.items() if k not in ("total", "round_trips") and v >= 0.005) + (
        f" ({t['round_trips']} round trips)" if "round_trips" in t else "")


def markdown(rs) -> str:
    lines = ["| cell | B,T,H | dtype | mode | configuration (fwd; bwd) | floor terms, µs/step (fwd; bwd) | "
             "predicted µs/step | cuDNN best µs/step | cuDNN / ours |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rs:
        conf = r["fwd"] + (f"; {r['bwd']}" if r["bwd"] else "")
        terms = _terms(r["terms_fwd"]) + (f"; {_terms(r['terms_bwd'])}" if r["terms_bwd"] else "")
        lines.append(f"| {r['cell']} | {r['B']},{r['T']},{r['H']} | {r['dtypes']} | {r['mode']} | {conf} | {terms}"
                     f" (+ GEMMs {r['gemm']:.2f}{' x4' if r['mode'] == 'fwbw' else ''}) | {r['predicted']:.2f} | "
                     f"{r['cudnn']:.2f} ({r['cudnn_dtype']}) | {r['ratio']:.2f} |")
    return "\n".join(lines)


#: the encoder of docs/anchors.md: 2 layers, bidirectional, B, T, input size I, hidden H (fp16)
ENCODER = dict(B=32, T=512, I=256, H=512, layers=2)


def encoder_rows():
    """The padded encoder, fw and fwbw in ms: each layer's recurrence (both directions in one
    launch, or each direction alone in turn: the v1 path) plus the GEMMs outside it (per
    layer: the input GEMM for both directions; fwbw adds dx, dW_ih and dW_hh, 3x the
    input GEMM's FLOPs with dW_hh's), at half of the fp16 peak."""
    import torch
    e = ENCODER
    B, T, H = e["B"], e["T"], e["H"]
    cudnn = dict(zip(_COLUMNS, _MODEL["encoder-padded"]))
    flops_in = sum(2 * B * T * (e["I"] if layer == 0 else 2 * H) * 2 * 4 * H for layer in range(e["layers"]))
    flops_hh = e["layers"] * 2 * 2 * B * T * H * 4 * H  # dW_hh of both directions
    gemm_ms = {"fw": flops_in / (GEMM_TFLOPS[16] * 0.5 * 1e9),
               "fwbw": (3 * flops_in + flops_hh) / (GEMM_TFLOPS[16] * 0.5 * 1e9)}
    out = []
    for label, D in (("both directions in one launch", 2), ("directions in turn (v1)", 1)):
        fw_l, fw = _launch_terms("lstm", B, H, torch.float16, "fwd", directions=D)
        bw_l, bw = _launch_terms("lstm", B, H, torch.float16, "bwd", directions=D)
        per_dir = 1 if D == 2 else 2  # D1: each layer runs its two directions one after the other
        step = {"fw": fw["total"] * per_dir, "fwbw": (fw["total"] + bw["total"]) * per_dir}
        for mode in ("fw", "fwbw"):
            rec = e["layers"] * T * step[mode] / 1000
            pred = rec + gemm_ms[mode]
            out.append(dict(case=label, mode=mode, fwd=_describe(fw_l), bwd=_describe(bw_l) if mode == "fwbw" else "",
                            step=step[mode], recurrence=rec, gemm=gemm_ms[mode], predicted=pred,
                            cudnn=cudnn[("fp16", mode)], ratio=cudnn[("fp16", mode)] / pred))
    return out


def projection_rows(B=64, T=256, H=1024, P=256):
    """µs/step of an LSTM with a projection (P = H/4) and of the same shape without one, 16-bit."""
    import torch
    out = []
    for p in (P, 0):
        fw_l, fw = _launch_terms("lstm", B, H, torch.float16, "fwd", proj=p)
        bw_l, bw = _launch_terms("lstm", B, H, torch.float16, "bwd", proj=p)
        out.append(dict(P=p, fwd=_describe(fw_l), bwd=_describe(bw_l), fw=fw["total"], bw=bw["total"],
                        terms_fwd=fw, terms_bwd=bw))
    return out


def v2_markdown() -> str:
    e = ENCODER
    lines = [f"Encoder (2 layers, bidirectional, B{e['B']}·T{e['T']}·I{e['I']}·H{e['H']}, fp16, padded):", "",
             "| recurrence | mode | configuration (fwd; bwd) | µs per layer-step | recurrence ms | GEMMs ms | "
             "predicted ms | cuDNN ms | cuDNN / ours |", "|---|---|---|---|---|---|---|---|---|"]
    for r in encoder_rows():
        conf = r["fwd"] + (f"; {r['bwd']}" if r["bwd"] else "")
        lines.append(f"| {r['case']} | {r['mode']} | {conf} | {r['step']:.2f} | {r['recurrence']:.2f} | "
                     f"{r['gemm']:.2f} | {r['predicted']:.2f} | {r['cudnn']:.2f} | {r['ratio']:.2f} |")
    lines += ["", "Projection (LSTM B64·H1024, fp16; µs per step):", "",
              "| P | configuration (fwd; bwd) | floor terms (fwd; bwd) | fw | bw | fwbw |", "|---|---|---|---|---|---|"]
    for r in projection_rows():
        lines.append(f"| {r['P'] or 'none'} | {r['fwd']}; {r['bwd']} | {_terms(r['terms_fwd'])}; "
                     f"{_terms(r['terms_bwd'])} | {r['fw']:.2f} | {r['bw']:.2f} | {r['fw'] + r['bw']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    rs = rows()
    print(markdown(rs))
    ratios = [r["ratio"] for r in rs if r["dtypes"] == "16-bit"]
    geo = 1.0
    for x in ratios:
        geo *= x
    print(f"\n16-bit: {sum(x > 1 for x in ratios)} of {len(ratios)} rows predicted faster than cuDNN's fastest dtype; "
          f"geometric mean cuDNN/ours {geo ** (1 / len(ratios)):.2f}")
    print()
    print(v2_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
