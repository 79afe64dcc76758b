"""Predicted µs per step of fusedrnn's Triton kernels at the anchor shapes on an H100,
from the configuration the library's own choice code picks (`config.choose` on the
H100's limits) and the latency model it ranks with (fusedrnn/ops/triton/model.py), next
to cuDNN's fastest dtype from docs/anchors.md (benchmarks/anchors.py). Prints the Markdown
table of benchmarks/NOTES.md's Triton section:

    python -m benchmarks.compile_check.triton_predict

Per row: the configuration, the model's terms (the floor: barrier, exchange of h or
d_gates through L2, W_hh streamed from L2, tensor-core time, pointwise, gx/y/saved over
HBM, and the input/weight GEMMs outside the recurrence at half of peak), the predicted
µs/step of fw (forward) and fwbw (forward + backward), and cuDNN's / ours (> 1: faster).
"""
from __future__ import annotations

import sys

from ..anchors import _COLUMNS, _LAYER

#: dense tensor-core peak for the GEMMs outside the loop (H100 SXM, TFLOP/s; half is assumed)
GEMM_TFLOPS = {16: 989.0, 32: 989.0 / 2}


def _launch_terms(cell, B, H, dtype, direction):
    import torch

    from fusedrnn.ops.triton import config, model
    from fusedrnn.ops.triton.cells import CELLS, GATES
    lau = config.choose(cell, B, H, dtype, config.H100, direction)
    G, GS = GATES[CELLS[cell]], config.gate_slots(cell)
    m_rows = GS * lau.BLOCK_N if direction == "fwd" else lau.BLOCK_N
    terms = model.step_us(lau.layout, lau.grid[0], lau.N_TILES, lau.BLOCK_N, lau.BLOCK_B, GS, lau.KP, lau.NKP,
                          lau.RESIDENT, B, H, G, torch.finfo(dtype).bits, direction,
                          config.uses_wgmma(m_rows, lau.BLOCK_B, lau.num_warps))
    return lau, terms


def _describe(lau) -> str:
    w = f"W res {lau.NKP}x{lau.KP}" if lau.RESIDENT else f"W streamed k{lau.KP}"
    tiles = f"x{lau.N_TILES}" if lau.N_TILES > 1 else ""
    return f"{lau.layout} {lau.grid[0]}x{lau.grid[1]} bb{lau.BLOCK_B} bn{lau.BLOCK_N}{tiles} {w} {lau.num_warps}w"


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
    return " + ".join(f"{k} {v:.2f}" for k, v in t.items() if k != "total" and v >= 0.005)


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


def main() -> int:
    rs = rows()
    print(markdown(rs))
    ratios = [r["ratio"] for r in rs if r["dtypes"] == "16-bit"]
    geo = 1.0
    for x in ratios:
        geo *= x
    print(f"\n16-bit: {sum(x > 1 for x in ratios)} of {len(ratios)} rows predicted faster than cuDNN's fastest dtype; "
          f"geometric mean cuDNN/ours {geo ** (1 / len(ratios)):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
