"""python -m tools.compile_check.critical_path: the critical path of single kernels
(sass_path.py) without the whole gate, as JSON lines, for the CI check
(tests/test_critical_path.py) and for reading one row by hand:

    python -m tools.compile_check.critical_path triton lstm bf16 16 768 fwd [--loads]
    python -m tools.compile_check.critical_path cuda lstm bf16 16 768 fwd
    python -m tools.compile_check.critical_path triton lstm bf16 16 768 fwd \
        --force BLOCK_N=8,KP=1024,NKP=1,RESIDENT=1,num_warps=8
    python -m tools.compile_check.critical_path triton gru+zo+rd bf16 8 128 bwd

A Triton cell named with the suffix `+zo+rd` is its kernel with zoneout and recurrent
dropout (every mask the cell has: the compile gate's "zo+rd" variant); its allowance is
the plain cell's, since the masks are loaded beside the step's inputs, not after the exchange.
--proj (Triton, LSTM) compiles the kernels with a projection of P = H/4 (the compile gate's).

--force (Triton) compiles config.choose's launch with those fields replaced (BLOCK_B, BLOCK_N,
KP, NKP, RESIDENT, num_warps, SPLIT: a forward's pieces split in K; the grid follows), to read
a configuration it does not pick.

Each line: backend, cell, dtype, B, H, direction, the launch (layout or tier), the counts
(round_trips, barriers, insts_per_step, the kernel's registers and spill bytes; Triton also
flag_round_trips, cluster_barriers, mma, mma_chain, shared memory and tensor-core kind), the
allowed round trips (2 per exchange, the reset-before GRU's two, + one per extra pass) and the
model's µs/step; --loads adds every global load of the step with its depth (CUDA: the
persistent kernel's, for the plan's layout). Triton needs a process without
TRITON_INTERPRET=1; the CUDA build is the gate's (cached under build/compile_check).
"""
from __future__ import annotations

import json
import sys

from .cases import CheckCase
from .cuda_rows import REGULARISED
from .rows import H100, Row

#: dependent round trips a step may take per exchange: the exchange's flag and its data
ROUND_TRIPS_ALLOWED = 2


def exchanges(cell: str, proj: bool = False) -> int:
    """Exchanges a step of `cell` needs where its programs exchange state: the reset-before GRU
    two (r ⊙ h_{t-1} is exchanged before the n gate's product can start, a dependence no
    layout of the product removes), as the LSTM with a projection (m_t before W_hr m_t), every
    other cell one."""
    from fusedrnn.cell_table import GRU_RESET_BEFORE
    return 2 if cell == GRU_RESET_BEFORE or proj else 1


#: REGULARISED (cuda_rows): the suffix of a cell name asking for its kernel with zoneout and
#: recurrent dropout (the CUDA regularised passes' kernel keys carry it too)


def split_cell(name: str) -> tuple[str, bool]:
    """'gru+zo+rd' -> ('gru', True): the cell and whether its kernel carries every regulariser mask."""
    if name.endswith(REGULARISED):
        return name[:-len(REGULARISED)], True
    return name, False


def triton_path(cell: str, dtype: str, B: int, H: int, direction: str, force: dict | None = None,
                regularised: bool = False, proj: bool = False) -> dict:
    from . import triton_rows as tr
    P = max(1, H // 4) if proj else 0  # the size triton_rows.step_trips assumes for a projection
    kernel, lau, res = tr.compile_on_h100(cell, dtype, B, H, direction, force, regularised=regularised, P=P)
    case = CheckCase(cell, dtype, B, H, True)
    row = tr.set_path(Row("triton", kernel.__name__, cell, dtype, B, H, direction, tr._variant(P, 1, regularised),
                          tr._layout(lau)), res["insts"], lau, case, direction)
    from . import sass_path
    rep = sass_path.analyse(res["insts"], {}, *tr.step_trips(lau, case, direction), tr.steps_per_trip(lau))
    return dict(rep.as_dict(), launch=row.layout, extra_passes=0, proj=P, predicted_us=row.predicted_us,
                terms=row.path["terms"], regs=res["regs"], spill=res["spill"], smem=res["smem"], tc=res["tc"],
                loads=[[hex(a), op, d, f] for a, op, d, f in rep.loads])


def cuda_loads(facts: dict, cell: str, dtype: str, B: int, H: int, direction: str, regularised: bool = False) -> list:
    """Every global load of the persistent kernel's walk for the plan of this row (the walk's
    last trip of the step loop, depths counted from the end of the trip before:
    sass_path.analyse), as [address, opcode, depth, flag]; [] where the plan runs per-step kernels."""
    from . import cuda_rows as cr, cuda_walks
    p = cr._C().plan_for(direction == "bwd", cell, cr.DTYPE_CODES[dtype], B, H, cr.limits(H100), proj=0,
                         directions=1, machine=cr._machine())
    key = ("persistent", direction + (REGULARISED if regularised else ""), cell, dtype)
    walks = facts.get(key, {}).get("walks")
    if not p["persistent"] or walks is None:
        return []
    insts, at = walks.kernel("|".join(key), cell)
    rep = cuda_walks.report(insts, at, p["layout"], cuda_walks.steps_per_trip("|".join(key)))
    return [[hex(a), op, d, f] for a, op, d, f in rep.loads]


def cuda_path(cell: str, dtype: str, B: int, H: int, direction: str, loads: bool = False,
              regularised: bool = False) -> dict:
    from . import cuda_rows as cr
    facts = cr.kernel_facts(H100.arch)  # a cold build compiles the four cells in parallel
    cr.SPEC[0] = H100
    rows = [r for r in cr._recurrence_rows(facts, cr.limits(H100), cell, dtype, B, H, True, regularised=regularised)
            if r.direction == direction]
    if any(r.error or r.round_trips is None for r in rows):
        raise RuntimeError(f"no critical path for {cell} {dtype} B{B} H{H} {direction}: {rows}")
    # the per-step tier's kernels of one step (a projection has two) run one after the other
    terms: dict = {}
    for r in rows:
        for k, v in r.path["terms"].items():
            terms[k] = terms.get(k, 0.0) + v
    return dict(round_trips=sum(r.round_trips for r in rows), barriers=sum(r.barriers for r in rows),
                flag_round_trips=sum(r.path.get("flag_round_trips", 0) for r in rows),
                insts_per_step=sum(r.insts_per_step for r in rows), launch=rows[0].layout,
                extra_passes=sum(r.extra_passes for r in rows), predicted_us=sum(r.predicted_us for r in rows),
                terms=terms, regs=rows[0].regs, spill=rows[0].spill_bytes,
                **({"loads": cuda_loads(facts, cell, dtype, B, H, direction, regularised)} if loads else {}))


def path(backend: str, cell: str, dtype: str, B: int, H: int, direction: str, force: dict | None = None,
         proj: bool = False, loads: bool = False) -> dict:
    """The critical path of one kernel; `cell` may carry the REGULARISED suffix (zoneout and
    recurrent dropout: the Triton kernel with every mask, the CUDA regularised passes);
    proj: with an LSTM projection of P = H/4 (Triton only)."""
    cell, regularised = split_cell(cell)
    if (force or proj) and backend != "triton":
        raise ValueError("--force and --proj apply to the triton backend only")
    d = (triton_path(cell, dtype, B, H, direction, force, regularised, proj) if backend == "triton"
         else cuda_path(cell, dtype, B, H, direction, loads, regularised))
    d.update(backend=backend, cell=cell, regularised=regularised, dtype=dtype, B=B, H=H, direction=direction,
             allowed=ROUND_TRIPS_ALLOWED * exchanges(cell, proj) + d.get("extra_passes", 0))
    return d


#: the launch fields --force may replace, with their types
FORCE_FIELDS = {"BLOCK_B": int, "BLOCK_N": int, "KP": int, "NKP": int, "RESIDENT": lambda v: bool(int(v)),
                "num_warps": int, "SPLIT": lambda v: bool(int(v))}


def parse_force(text: str) -> dict:
    """'BLOCK_N=8,RESIDENT=1' -> {"BLOCK_N": 8, "RESIDENT": True}; ValueError naming the fields."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, val = item.partition("=")
        if key not in FORCE_FIELDS or not val:
            raise ValueError(f"--force takes FIELD=VALUE,... with FIELD one of {', '.join(FORCE_FIELDS)}: {item!r}")
        out[key] = FORCE_FIELDS[key](val)
    if not out:
        raise ValueError("--force needs FIELD=VALUE,...")
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    loads, proj = "--loads" in argv, "--proj" in argv
    argv = [a for a in argv if a not in ("--loads", "--proj")]
    force = None
    if "--force" in argv:
        i = argv.index("--force")
        force = parse_force(argv[i + 1] if i + 1 < len(argv) else "")
        del argv[i:i + 2]
    if len(argv) % 6 or not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for i in range(0, len(argv), 6):
        backend, cell, dtype, B, H, direction = argv[i:i + 6]
        d = path(backend, cell, dtype, int(B), int(H), direction, force, proj, loads)
        if not loads:
            d.pop("loads", None)
        print(json.dumps(d), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
