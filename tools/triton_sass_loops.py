"""Static counts of the instructions that set a recurrence kernel's step latency, per loop
of its sm_90 SASS (compiled without a GPU, exactly as the compile gate compiles it).

    python tools/triton_sass_loops.py lstm bf16 1 256 bwd [--dump PATH]

Every backward branch of the SASS is a loop; the widest is the time loop, the loops inside
it are the streamed W_hh chunks and the barrier's poll. For each loop (outermost first) it
prints its span and how many CTA barriers (BAR.SYNC), memory barriers (MEMBAR), L1
invalidates (CCTL), global loads (LDG), atomics (ATOMG/RED) and instructions it holds
statically (a nested loop's instructions count in its parents too). The compile and the
SASS reading are the compile gate's (triton_rows.compile_one, sass_path). Needs a process
without TRITON_INTERPRET=1.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's benchmarks package

KINDS = {"bar": r"^BAR\.SYNC", "membar": r"^MEMBAR", "cctl": r"^CCTL", "ldg": r"^LDG", "atom": r"^(ATOMG|RED)\b",
         "lds": r"^LDS", "sts": r"^STS", "mma": r"^(HGMMA|HMMA)"}


def compiled(cell, dtype, B, H, direction):
    """(the launch config.choose picks on an H100, its resources and parsed SASS instructions)."""
    from tools.compile_check import triton_rows as tr
    try:
        _, lau, res = tr.compile_on_h100(cell, dtype, B, H, direction)
    except RuntimeError as e:
        raise SystemExit(str(e)) from None
    return lau, res


def counts(body) -> dict:
    c = {k: sum(1 for i in body if re.search(p, i.op)) for k, p in KINDS.items()}
    c["insts"] = len(body)
    return c


def main(argv=None):
    from tools.compile_check import sass_path
    p = argparse.ArgumentParser()
    p.add_argument("cell")
    p.add_argument("dtype")
    p.add_argument("B", type=int)
    p.add_argument("H", type=int)
    p.add_argument("direction", choices=("fwd", "bwd"))
    p.add_argument("--dump", help="write the parsed SASS (address, guard, opcode, operands) here")
    a = p.parse_args(argv)
    lau, res = compiled(a.cell, a.dtype, a.B, a.H, a.direction)
    insts = res["insts"]
    if a.dump:
        with open(a.dump, "w") as f:
            for i in insts:
                f.write(f"{i.addr:#06x} {'@' + i.guard + ' ' if i.guard else ''}{i.op} {', '.join(i.operands)}\n")
    print(f"{a.cell} {a.dtype} B{a.B} H{a.H} {a.direction}: {lau.layout} grid{lau.grid} bb{lau.BLOCK_B} "
          f"bn{lau.BLOCK_N} kp{lau.KP}x{lau.NKP} tiles{lau.N_TILES} resident={lau.RESIDENT} "
          f"warps={lau.num_warps} regs={res['regs']} spill={res['spill']} smem={res['smem']}")
    print("kernel", counts(insts))
    for lo, hi in sorted(sass_path.loops(insts), key=lambda ab: ab[0] - ab[1]):
        print(f"loop {insts[lo].addr:#06x}-{insts[hi].addr:#06x}", counts(insts[lo:hi + 1]))


if __name__ == "__main__":
    sys.exit(main())
