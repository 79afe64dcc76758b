"""What the compile gate reports: the target device, the cases it is asked about, and
one Row per kernel launch with the flags that decide the exit code.

Dimensions: B batch, H hidden units; cells as in fusedrnn.ops (lstm, gru, rnn_tanh,
rnn_relu); dtypes fp32, bf16, fp16.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fusedrnn import machine


@dataclass(frozen=True)
class DeviceSpec:
    """The limits of the GPU the launches are planned and checked for."""
    name: str
    arch: int                  # compute capability as an int: 90 for sm_90
    sms: int                   # multiprocessors
    smem_optin: int            # bytes of dynamic shared memory one block may opt in to
    smem_per_sm: int           # bytes of shared memory per multiprocessor
    regs_per_sm: int           # 32-bit registers per multiprocessor
    max_threads_per_sm: int
    max_blocks_per_sm: int
    max_cluster: int = 16      # CTAs per thread-block cluster (non-portable size on sm_90)


# NVIDIA H100 SXM5 80GB (sm_90): the card of the published anchors (docs/anchors.md) and of the lent GPU machine;
# its limits are the machine model's (fusedrnn/machine.py LIMITS, which the C++ side reads too).
_L = machine.LIMITS
H100 = DeviceSpec("H100", 10 * _L["cc_major"] + _L["cc_minor"], _L["sms"], _L["smem_optin"], _L["smem_per_sm"],
                  _L["regs_per_sm"], 2048, 32, _L["max_cluster"])
DEVICES = {"H100": H100, "sm_90": H100}


@dataclass(frozen=True)
class CheckCase:
    """One (cell, dtype, B, H) the gate asks each backend about."""
    cell: str
    dtype: str   # "fp32" | "bf16" | "fp16"
    B: int
    H: int
    anchor: bool = False


# flags; the first three make the gate fail
FAIL, SMEM, CORES, SPILL = "FAIL", "SMEM", "CORES", "SPILL"
FATAL = (FAIL, SMEM, CORES)


@dataclass
class Row:
    """One kernel launch as the library's own choice code would issue it on `spec`."""
    backend: str            # "triton" | "cuda"
    kernel: str             # kernel function name
    cell: str
    dtype: str
    B: int
    H: int
    direction: str          # "fwd" | "bwd" (or e.g. "cell-fwd")
    variant: str            # e.g. "plain", "len+rev": the constexpr/template variant compiled
    layout: str             # the layout/tier/mode the choice code picked
    grid: tuple = ()
    threads: int = 0        # threads per block (num_warps * 32 for Triton)
    regs: int | None = None          # registers per thread
    spill_bytes: int | None = None   # spill stores + loads, bytes (ptxas)
    smem: int | None = None          # shared memory per block, bytes (static + dynamic)
    tensor_cores: str = ""           # "wgmma", "mma" or "" (none)
    per_sm: int | None = None        # blocks of this kernel one SM can hold at once
    barrier: bool = False            # the grid meets at a grid barrier (must be co-resident)
    anchor: bool = False
    error: str | None = None         # compile error, when FAIL
    flags: list = field(default_factory=list)
    predicted_us: float | None = None  # optional: the backend's latency model, µs per step on the device
    # the critical path of one step read from the compiled step loop (sass_path.py)
    round_trips: int | float | None = None  # dependent global round trips per step (a mean)
    barriers: int | None = None        # CTA + cluster barriers per step
    insts_per_step: int | None = None  # instructions one warp issues per step
    extra_passes: int = 0              # passes over K beyond the first (CUDA grid tier): one round trip each
    path: dict | None = None           # every count of sass_path.PathReport and the model's terms of predicted_us

    def as_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = list(self.grid)
        return d


def occupancy(spec: DeviceSpec, threads: int, regs: int | None, smem: int | None) -> int:
    """Blocks of one kernel an SM holds at once (registers allocated per warp in 256s)."""
    if threads <= 0:
        return 0
    warps = -(-threads // 32)
    limits = [spec.max_blocks_per_sm, spec.max_threads_per_sm // (warps * 32)]
    if regs:
        per_warp = -(-regs * 32 // 256) * 256
        limits.append(spec.regs_per_sm // (per_warp * warps))
    if smem:
        limits.append(spec.smem_per_sm // (smem + 1024))  # 1 KB per block reserved by the driver
    return max(0, min(limits))


def grid_blocks(grid) -> int:
    n = 1
    for g in grid:
        n *= int(g)
    return n


def apply_flags(row: Row, spec: DeviceSpec) -> Row:
    """Fill per_sm (if the backend did not) and the flags of a row."""
    flags = []
    if row.error:
        flags.append(FAIL)
    else:
        if row.per_sm is None and row.threads:
            row.per_sm = occupancy(spec, row.threads, row.regs, row.smem)
        if row.smem is not None and row.smem > spec.smem_optin:
            flags.append(SMEM)
        if row.barrier and (row.per_sm or 0) * spec.sms < grid_blocks(row.grid):
            flags.append(CORES)
        if row.spill_bytes:
            flags.append(SPILL)
    row.flags = flags
    return row
