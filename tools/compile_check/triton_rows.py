"""Compile-gate rows of the triton backend (see rows.py for the contract).

For every case and direction it asks fusedrnn's own choice code what the launcher would
launch on the spec's device (`config.choose` with the spec's SM count, opt-in shared
memory and registers), builds that launch's argument list with the launcher's own
builders (`launch.fwd_args` / `bwd_args`, tensors replaced by `MockTensor`s of the same
dtypes), specialises it exactly as Triton's JIT does at a launch (its binder and
`_pack_args`: B and H divisibility / == 1, 16-byte aligned pointers, T, flags and the
spin limit never specialised), and compiles that for the spec's architecture. Every
variant the library launches (bias, lengths, reverse, save) is a runtime flag of one
compiled kernel, so a case has one kernel per direction; identical compiles (B is a
runtime argument: many cases share one) are compiled once, in parallel processes.

Contract v2's variants (`variants`): at every anchor, both directions in one launch (D2,
the grid's co-residency counting both directions' programs) and for the LSTM a projection
of a quarter of H (P = H/4: H1024·P256 at the B64 anchor) with one and two directions;
beside the anchors (`EXTRA`), the model-level encoder (2-layer bidirectional LSTM,
B32·H512: its recurrence is one D2 launch per layer; I only changes the input GEMM),
counted as an anchor (no 16-bit spill allowed), and a small projection the cta layout
runs (B3·H33·P8: W_hr resident beside W_hh).

Registers, local memory (spill slots, bytes per thread) and static shared memory come
from the cubin (cuobjdump --dump-resource-usage), dynamic shared memory from Triton's
metadata, tensor cores from the PTX (wgmma, else mma.sync). On a GPU machine the same
compile fills Triton's on-disk cache under the very key a real launch computes, so
running the gate there first also warms the JIT cache for the tests and benchmarks.

The fused decode step (step_kernel.py, direction "step"): for every cell and dtype of the
anchor cases asked about, the 2-layer LSTM decoder's sizes (B 1..64, H 256..1024, I = H;
anchors: no 16-bit spill) and an odd edge, with the launcher's own geometry
(`step_launch.step_launch_config`) and argument builder (`step_args`).

Needs a process without TRITON_INTERPRET=1 (the interpreter cannot compile).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor

from . import sass_path
from .rows import Row

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_TOOLS = None


def _triton():
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("the Triton compile gate needs a process without TRITON_INTERPRET=1")
    import torch
    import triton
    from triton.backends.compiler import GPUTarget

    from fusedrnn.ops.triton import config, kernels, launch
    return torch, triton, GPUTarget, config, kernels, launch


def _mock(dtype):
    from triton.runtime.jit import MockTensor
    return MockTensor(dtype)


#: cases beside the anchors, (cell, B, H, P, D, anchor, regularised), compiled in every dtype of
#: the anchor cases of their cell asked about: the encoder's recurrence (2-layer bidirectional
#: LSTM, B32·T512·I256·H512), a projection small enough for the cta layout, and the kernels
#: with zoneout and recurrent dropout (every mask the cell has) at two anchor shapes (the
#: reset-before GRU's and the LSTM projection's at one: their two phases meet the masks)
EXTRA = (("lstm", 32, 512, 0, 2, True, False), ("lstm", 3, 33, 8, 2, False, False),
         ("lstm", 16, 768, 0, 1, True, True), ("gru", 8, 128, 0, 1, True, True),
         ("gru_reset_before", 8, 128, 0, 1, True, True), ("lstm", 8, 128, 32, 1, True, True))


def variants(case) -> list[tuple[int, int, bool]]:
    """(P, D, regularised) compiled for a case (P 0: no projection): D1 always; at an anchor
    also D2 and, for the LSTM, P = H/4 with D1 and D2 (the reset-before GRU, which runs
    neither a projection nor two directions in one launch: D1 only)."""
    out = [(0, 1, False)]
    if case.anchor and case.cell != "gru_reset_before":
        out.append((0, 2, False))
        if case.cell == "lstm":
            out += [(max(1, case.H // 4), 1, False), (max(1, case.H // 4), 2, False)]
    return out


def extra_cases(cases) -> list:
    """(CheckCase, [(P, D, regularised)]) of EXTRA in each dtype of the anchor cases of its cell
    asked about."""
    from .rows import CheckCase
    out = []
    for cell, B, H, P, D, anchor, reg in EXTRA:
        dtypes = sorted({c.dtype for c in cases if c.anchor and c.cell == cell})
        out += [(CheckCase(cell, d, B, H, anchor=anchor), [(P, D, reg)]) for d in dtypes]
    return out


def forced(lau, force: dict, B: int, H: int):
    """The launch `lau` with the fields of `force` replaced (BLOCK_B, BLOCK_N, KP, NKP, RESIDENT,
    num_warps, SPLIT: a configuration the choice code would not pick, compiled to read its critical
    path); the grid follows the tiles (one tile per program when resident)."""
    lau = lau._replace(**force)
    n_units = -(-H // lau.BLOCK_N)
    tiles = 1 if lau.RESIDENT else lau.N_TILES
    return lau._replace(N_TILES=tiles, grid=(-(-n_units // tiles), -(-B // lau.BLOCK_B), lau.grid[2]))


def launch_args(cell: str, dtype_name: str, B: int, H: int, direction: str, limits, T: int = 16, P: int = 0,
                D: int = 1, force: dict | None = None, regularised: bool = False):
    """(kernel, Launch, args, kwargs): what the launcher would pass for this case (P: the
    LSTM projection's size, 0 for none; D directions; with two launches in turn, the first;
    force: fields of the launch to replace, see `forced`; regularised: with every mask of
    zoneout and recurrent dropout the cell has)."""
    torch, _, _, config, kernels, launch = _triton()
    dtype = getattr(torch, DTYPES[dtype_name])
    lau = config.choose(cell, B, H, dtype, limits, direction, proj=P, directions=D, regularised=regularised)
    if force:
        lau = forced(lau, force, B, H)
    f32, i32 = _mock(torch.float32), _mock(torch.int32)
    x = _mock(dtype)
    n = launch.Sizes(T, B, H, P or H, D)
    masks = (f32, f32 if cell == "lstm" else None, f32) if regularised else None
    if direction == "fwd":
        # with bias, lengths and save: the same kernel as without (runtime flags)
        args, kw = launch.fwd_args(cell, lau, x, x, x, x if P else None, i32, x, f32, f32, f32, f32, f32, i32, n,
                                   False, True, masks=masks)
        return kernels.recurrence_fwd_kernel, lau, args, kw
    write_dgx = launch.writes_dgx(cell, dtype)
    args, kw = launch.bwd_args(cell, lau, x, x, x if P else None, i32, f32, f32, f32, x if write_dgx else f32, f32,
                               f32, f32, i32, n, False, write_dgx, masks=masks)
    return kernels.recurrence_bwd_kernel, lau, args, kw


def specialise(kernel, args, kw, arch: int):
    """Triton's own launch-time specialisation for the target: (signature, constexprs,
    attrs, options), as JITFunction.run computes them before compiling."""
    _, triton, GPUTarget, *_ = _triton()
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    kw = dict(kw)
    kw["debug"] = kw.get("debug", kernel.debug) or triton.knobs.runtime.debug
    kw["instrumentation_mode"] = triton.knobs.compilation.instrumentation_mode
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **kw)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kw, bound, specialization, options)
    return signature, constexprs, attrs, options


def _tool(name: str) -> str:
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def compile_one(job):
    """Compile one (kernel name, signature, constexprs, attrs, options, arch) in this
    process; -> dict of resources, or {"error": ...}."""
    name, signature, constexprs, attrs, options, arch = job
    try:
        _, triton, GPUTarget, _, kernels, _ = _triton()
        from triton.compiler import ASTSource

        from fusedrnn.ops.triton import step_kernel
        fn = getattr(kernels, name, None) or getattr(step_kernel, name)
        k = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                           options=options)
        with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
            f.write(k.asm["cubin"])
        try:
            usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True,
                                   text=True, check=True).stdout
            sass = subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                                  check=True).stdout
        finally:
            os.unlink(f.name)
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
        if not m:
            return {"error": f"cuobjdump gave no resource usage: {usage[:200]}"}
        ptx = k.asm["ptx"]
        tc = "wgmma" if "wgmma.mma_async" in ptx else "mma" if "mma.sync" in ptx else ""
        funcs = list(sass_path.parse(sass).values())
        return {"regs": int(m[1]), "spill": int(m[4]) + int(m[2]), "smem": k.metadata.shared + int(m[3]), "tc": tc,
                "insts": funcs[0] if funcs else None}
    except Exception as e:  # a compile failure is a FAIL row, not a crash of the gate
        return {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]}


def compile_on_h100(cell: str, dtype_name: str, B: int, H: int, direction: str, force: dict | None = None,
                    regularised: bool = False, P: int = 0):
    """(kernel, the launch config.choose picks on an H100 (with `force`'s fields replaced), the
    compile result) of one D1 layer kernel (regularised: with zoneout and recurrent dropout; P:
    the LSTM projection's size, 0 for none); RuntimeError with the compiler's message if it does
    not compile."""
    from .rows import H100  # noqa: PLC0415
    config = _triton()[3]
    limits = config.DeviceLimits(H100.sms, H100.smem_optin, H100.regs_per_sm)
    kernel, lau, args, kw = launch_args(cell, dtype_name, B, H, direction, limits, P=P, force=force,
                                        regularised=regularised)
    sig, constexprs, attrs, options = specialise(kernel, args, kw, H100.arch)
    res = compile_one((kernel.__name__, sig, constexprs, attrs, options.__dict__, H100.arch))
    if res.get("error"):
        raise RuntimeError(res["error"])
    return kernel, lau, res


def step_trips(lau, case, direction) -> tuple[int, int]:
    """(iterations of the innermost loops, of the tile loop) of one step: a streamed W_hh
    takes ceil(K / KP) chunks (per gate backward: contract_fwd / contract_bwd), STREAM_AHEAD
    of them per iteration of its loop (one where they rotate), each tile in turn."""
    if lau.RESIDENT or lau.CARRY:
        return 1, lau.N_TILES
    from fusedrnn.ops.triton.cells import CELLS, GATES
    from fusedrnn.ops.triton.steps import STREAM_AHEAD
    P = lau.KR and case.H // 4 or 0  # the variants' projection is H/4 (variants())
    K = (P or case.H) if direction == "fwd" else case.H
    chunks = -(-K // lau.KP) * (1 if direction == "fwd" else GATES[CELLS[case.cell]])
    if lau.PROJ and direction == "fwd" and lau.N_TILES > 1:  # W_hh's chunks rotate one per iteration
        return chunks, lau.N_TILES
    # (a forward projection's W_hr loop, one chunk per iteration, is walked as often: approximate)
    return -(-chunks // int(STREAM_AHEAD.value)), lau.N_TILES


def steps_per_trip(lau) -> int:
    """Recurrence steps per trip of the step loop: the cta layout's is unrolled by its prefetch
    distance (model.CTA_PREFETCH_AHEAD: a step's inputs are loaded that many steps ahead)."""
    from fusedrnn.ops.triton import model
    return model.CTA_PREFETCH_AHEAD if lau.CARRY else 1


def set_path(row: Row, insts, lau, case, direction) -> Row:
    """The row's critical-path counts from its kernel's SASS (sass_path) and the machine
    model's µs per step of them, both directions' launches in turn counted."""
    if not insts:
        return row
    from fusedrnn import machine
    inner, outer = step_trips(lau, case, direction)
    rep = sass_path.analyse(insts, {}, inner, outer, steps_per_trip(lau))
    row.round_trips, row.barriers = rep.round_trips, rep.barriers + rep.cluster_barriers
    row.insts_per_step = rep.insts_per_step
    bits = 32 if case.dtype == "fp32" else 16
    terms = sass_path.predicted_terms(rep, machine.current(), bits, lau.num_warps)
    row.path = dict(rep.as_dict(), terms=terms, launches=lau.launches)
    row.predicted_us = round(terms["total"] * lau.launches, 2)
    return row


def _layout(lau) -> str:
    w = f"res{lau.NKP}x{lau.KP}" if lau.RESIDENT else f"k{lau.KP}"
    tiles = f"x{lau.N_TILES}" if lau.N_TILES > 1 else ""
    proj = (" Wr res" if lau.CARRY else f" r{lau.KR}") if lau.PROJ else ""
    turns = f" {lau.launches} launches" if lau.launches > 1 else ""
    return f"{lau.layout} bb{lau.BLOCK_B} bn{lau.BLOCK_N}{tiles} {w}{proj}{turns}"


def _variant(P: int, D: int, regularised: bool = False) -> str:
    return f"D{D}" + (f" P{P}" if P else "") + (" zo+rd" if regularised else "")


def _freeze(x):
    if isinstance(x, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    return x if isinstance(x, (int, float, str, bool, type(None))) else repr(x)


#: (B, I, H, anchor) of the fused decode step: the decoder's sizes, an odd edge
STEP_CASES = ((1, 256, 256, True), (8, 512, 512, True), (1, 1024, 1024, True), (64, 1024, 1024, True),
              (3, 33, 37, False))


def step_jobs(cases, arch):
    """(CheckCase, StepLaunch, compile job) of the decode step for every cell and dtype of
    the anchor cases asked about, at STEP_CASES."""
    torch, *_ = _triton()
    from fusedrnn.ops.triton import step_kernel, step_launch
    from .rows import CheckCase
    out = []
    for cell, dtype_name in sorted({(c.cell, c.dtype) for c in cases if c.anchor}):
        dtype = getattr(torch, DTYPES[dtype_name])
        for B, I, H, anchor in STEP_CASES:
            lau = step_launch.step_launch_config(cell, dtype, B, I, H)
            x = _mock(dtype)
            args, kw = step_launch.step_args(cell, B, I, H, x, x, x, x, x, x, x, x, x, lau)
            sig, constexprs, attrs, options = specialise(step_kernel.cell_step_kernel, args, kw, arch)
            job = ("cell_step_kernel", sig, constexprs, attrs, options.__dict__, arch)
            out.append((CheckCase(cell, dtype_name, B, H, anchor=anchor), I, lau, job))
    return out


def rows(spec, cases, jobs, initializer=None):
    """One Row per kernel launch the triton backend would issue for each case on `spec`.
    `initializer`: run first in every compiling process (tools/device_check/warm_cache.py
    sets the GPU host's cache key with it)."""
    _, _, _, config, _, _ = _triton()
    limits = config.DeviceLimits(spec.sms, spec.smem_optin, spec.regs_per_sm)
    planned, work = [], {}
    for case, pds in [(c, variants(c)) for c in cases] + extra_cases(cases):
        for P, D, reg in pds:
            for direction in ("fwd", "bwd"):
                kernel, lau, args, kw = launch_args(case.cell, case.dtype, case.B, case.H, direction, limits, P=P,
                                                    D=D, regularised=reg)
                sig, constexprs, attrs, options = specialise(kernel, args, kw, spec.arch)
                job = (kernel.__name__, sig, constexprs, attrs, options.__dict__, spec.arch)
                key = _freeze(job)
                work.setdefault(key, job)
                planned.append((case, _variant(P, D, reg), direction, kernel.__name__, lau, key))
    steps = []
    for case, I, lau, job in step_jobs(cases, spec.arch):
        key = _freeze(job)
        work.setdefault(key, job)
        steps.append((case, I, lau, key))
    results = {}
    n = jobs or os.cpu_count() or 1
    if n > 1 and len(work) > 1:
        import multiprocessing as mp
        with ProcessPoolExecutor(max_workers=min(n, len(work)), mp_context=mp.get_context("spawn"),
                                 initializer=initializer) as ex:
            for key, res in zip(work, ex.map(compile_one, work.values())):
                results[key] = res
    else:
        if initializer is not None:
            initializer()
        results = {key: compile_one(job) for key, job in work.items()}
    out = []
    for case, variant, direction, name, lau, key in planned:
        res = results[key]
        out.append(set_path(Row("triton", name.replace("recurrence_", "").replace("_kernel", ""), case.cell, case.dtype,
                       case.B, case.H, direction, variant, _layout(lau), grid=tuple(lau.grid),
                       threads=32 * lau.num_warps, regs=res.get("regs"), spill_bytes=res.get("spill"),
                       smem=res.get("smem"), tensor_cores=res.get("tc", ""), barrier=lau.BARRIER,
                       anchor=case.anchor, error=res.get("error"), predicted_us=round(lau.us_per_step, 2)),
                            res.get("insts"), lau, case, direction))
    for case, I, lau, key in steps:
        res = results[key]
        out.append(Row("triton", "cell_step", case.cell, case.dtype, case.B, case.H, "step", f"I{I}",
                       f"bb{lau.BLOCK_B} bn{lau.BLOCK_N} k{lau.KC}", grid=lau.grid(case.B, case.H),
                       threads=32 * lau.num_warps, regs=res.get("regs"), spill_bytes=res.get("spill"),
                       smem=res.get("smem"), tensor_cores=res.get("tc", ""), anchor=case.anchor,
                       error=res.get("error")))
    return out
