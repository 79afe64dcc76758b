"""Static counts of the instructions that set a recurrence kernel's step latency, per loop
of its sm_90 SASS (compiled without a GPU, exactly as the compile gate compiles it).

    python scripts/triton_sass_loops.py lstm bf16 1 256 bwd [--dump PATH]

Every backward branch of the SASS is a loop; the widest is the time loop, the loops inside
it are the streamed W_hh chunks and the barrier's poll. For each loop (outermost first) it
prints its span and how many CTA barriers (BAR.SYNC), memory barriers (MEMBAR), L1
invalidates (CCTL), global loads (LDG), atomics (ATOMG/RED) and instructions it holds
statically (a nested loop's instructions count in its parents too). Needs a process
without TRITON_INTERPRET=1.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile

KINDS = {"bar": r"\bBAR\.SYNC", "membar": r"\bMEMBAR", "cctl": r"\bCCTL", "ldg": r"\bLDG", "atom": r"\b(ATOMG|RED)\b",
         "lds": r"\bLDS", "sts": r"\bSTS", "mma": r"\b(HGMMA|HMMA)"}
_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")


def sass_of(cell, dtype, B, H, direction, P=0, D=1):
    from benchmarks.compile_check import triton_rows as tr
    from benchmarks.compile_check.rows import DEVICES
    spec = DEVICES["H100"]
    _, triton, GPUTarget, config, _, _ = tr._triton()
    from triton.compiler import ASTSource
    limits = config.DeviceLimits(spec.sms, spec.smem_optin, spec.regs_per_sm)
    kernel, lau, args, kw = tr.launch_args(cell, dtype, B, H, direction, limits, P=P, D=D)
    sig, constexprs, attrs, options = tr.specialise(kernel, args, kw, spec.arch)
    k = triton.compile(ASTSource(kernel, sig, constexprs, attrs), target=GPUTarget("cuda", spec.arch, 32),
                       options=options.__dict__)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        sass = subprocess.run([tr._tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout
        usage = subprocess.run([tr._tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True,
                               text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
    res = dict(regs=int(m[1]), spill=int(m[2]) + int(m[4]), smem=k.metadata.shared + int(m[3]))
    return lau, sass, res


def loops(sass: str):
    """[(start, end, [instructions])] of every backward branch, widest first."""
    ins = [(int(a, 16), t) for a, t in _LINE.findall(sass)]
    out = []
    for addr, text in ins:
        m = re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", text)
        if m and int(m[1], 16) < addr:
            lo = int(m[1], 16)
            out.append((lo, addr, [t for a, t in ins if lo <= a <= addr]))
    return sorted(out, key=lambda r: r[0] - r[1]), [t for _, t in ins]


def counts(body) -> dict:
    c = {k: sum(1 for t in body if re.search(p, t)) for k, p in KINDS.items()}
    c["insts"] = len(body)
    return c


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("cell")
    p.add_argument("dtype")
    p.add_argument("B", type=int)
    p.add_argument("H", type=int)
    p.add_argument("direction", choices=("fwd", "bwd"))
    p.add_argument("--dump", help="write the SASS here")
    a = p.parse_args(argv)
    lau, sass, res = sass_of(a.cell, a.dtype, a.B, a.H, a.direction)
    if a.dump:
        with open(a.dump, "w") as f:
            f.write(sass)
    found, allins = loops(sass)
    print(f"{a.cell} {a.dtype} B{a.B} H{a.H} {a.direction}: {lau.layout} grid{lau.grid} bb{lau.BLOCK_B} "
          f"bn{lau.BLOCK_N} kp{lau.KP}x{lau.NKP} tiles{lau.N_TILES} resident={lau.RESIDENT} "
          f"warps={lau.num_warps} {res}")
    print("kernel", counts(allins))
    for lo, hi, body in found:
        print(f"loop {lo:#06x}-{hi:#06x}", counts(body))


if __name__ == "__main__":
    sys.exit(main())
