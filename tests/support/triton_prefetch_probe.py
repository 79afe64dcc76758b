"""Compile Triton recurrence kernels for sm_90 and print, per global load in the step loop,
how far along the loop (in instructions, wrapping around its back edge) its first reader or
overwriter is, and the tensor-core instruction the kernel uses ("mma": mma.sync, "wgmma"): one JSON line per "cell,dtype,B,H,direction" argument. Run without
TRITON_INTERPRET (tests/test_triton_prefetch_sass.py)."""
from __future__ import annotations

import json
import sys

from tools.compile_check import sass_path, triton_rows


def first_touches(insts):
    """(instructions in the step loop, [(address, opcode, distance to the load's first reader)])."""
    lo, hi = sass_path.step_loop(insts)
    body = list(range(lo, hi + 1))
    out = []
    for k, n in enumerate(body):
        load = insts[n]
        if not load.is_global_load():
            continue
        regs = set(sass_path.dests(load))
        order = body[k + 1:] + body[:k + 1]
        dist = next(j for j, m in enumerate(order, 1)
                    if regs & (set(sass_path.sources(insts[m])) | set(sass_path.dests(insts[m]))))
        out.append((hex(load.addr), load.op, dist))
    return len(body), out


if __name__ == "__main__":
    for spec in sys.argv[1:]:
        cell, dtype, B, H, direction = spec.split(",")
        _, lau, res = triton_rows.compile_on_h100(cell, dtype, int(B), int(H), direction)
        n, loads = first_touches(res["insts"])
        print(json.dumps(dict(spec=spec, layout=lau.layout, warps=lau.num_warps, tc=res.get("tc"), body=n, loads=loads)),
              flush=True)
