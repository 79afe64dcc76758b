"""Compile-gate rows of the cuda backend (see rows.py for the contract).

For each case and direction the extension's own host-side plan (`fusedrnn._C.plan_for`,
given the target's limits, no GPU) says what would be launched: the persistent kernel
on its tier (grid, cluster, dynamic shared memory) or the per-step kernel(s). Each row then
carries the registers, spills and static shared memory of that exact template
instantiation, from an `nvcc -Xptxas -v` build of csrc/kernels/<cell>.cu for the target
architecture, whether its SASS uses the tensor cores (HMMA/HGMMA, via cuobjdump), and the
critical path of one step read from that SASS (sass_path.py; the persistent kernel walked
for the plan's layout, cuda_walks.py): round_trips, barriers, insts_per_step and the machine model's µs/step.

Besides the requested cases, every run adds the kernel contract v2's cases for the cells
and dtypes asked for (V2_CASES): both directions in one launch (variant "D2"), the LSTM
projection (variant "proj<P>", two kernels per step on the per-step tier) and the fused
decode step (direction "step", variant "cell-step").

Full sweep: `python -m tools.compile_check --backends cuda --shapes all` (the CI test
runs `--shapes ci`). The build is cached under build/compile_check/ (FUSEDRNN_COMPILE_CACHE overrides), keyed by
a hash of csrc/, the nvcc version, the flags and the architecture: a warm gate compiles
nothing, a cold one compiles the four cells in parallel (about a minute on 2 cores).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from . import cuda_walks, sass_path
from .rows import Row, occupancy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSRC = os.path.join(ROOT, "csrc")
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu", "gru_reset_before")
#: the cells without a fused decode step (fusedrnn runs their step as the recurrence at T = 1)
NO_CELL_STEP = ("gru_reset_before",)
#: cells whose kernels take no zoneout or recurrent-dropout masks (cuda.unsupported declines them)
NO_MASKS = ("gru_reset_before",)
DTYPE_CODES = {"fp32": 0, "fp16": 1, "bf16": 2}
CXX_DTYPES = {"float": "fp32", "__half": "fp16", "__nv_bfloat16": "bf16"}
CXX_CELLS = {"LstmCell": "lstm", "GruCell": "gru", "RnnCell<false>": "rnn_tanh", "RnnCell<true>": "rnn_relu",
             "GruResetBeforeCell": "gru_reset_before"}
THREADS = 256
#: the suffix of a regularised pass (zoneout and recurrent dropout: csrc/passes.cuh FwdRegPass,
#: BwdRegPass) in a kernel key, and of its cell in critical_path's names
REGULARISED = "+zo+rd"


def limits(spec) -> dict:
    """The DeviceSpec as the plan's device limits."""
    return dict(sms=spec.sms, smem_optin=spec.smem_optin, smem_per_sm=spec.smem_per_sm,
                regs_per_sm=spec.regs_per_sm, cc_major=spec.arch // 10, cc_minor=spec.arch % 10,
                max_cluster=spec.max_cluster, cooperative=1)


def _tool(name: str) -> str | None:
    """A CUDA tool on PATH, beside nvcc, or the one Triton ships."""
    found = shutil.which(name)
    if found:
        return found
    sys.path.insert(0, ROOT)
    import csrc_build  # noqa: PLC0415
    nvcc = csrc_build.find_nvcc()
    cands = [os.path.join(os.path.dirname(nvcc), name)] if nvcc else []
    try:
        import triton  # noqa: PLC0415
        cands.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name))
    except ImportError:
        pass
    return next((c for c in cands if os.path.isfile(c) and os.access(c, os.X_OK)), None)


def _nvcc_flags(arch: int) -> list[str]:
    sys.path.insert(0, ROOT)
    import csrc_build  # noqa: PLC0415
    return ["-O3", "-std=c++17", "-DNDEBUG", "-I" + CSRC, "-cubin", "-Xptxas", "-v",
            "-gencode", f"arch=compute_{arch},code=sm_{arch}"], csrc_build.find_nvcc()


def _cache_key(arch: int, nvcc: str, flags: list[str]) -> str:
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(CSRC, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            h.update(os.path.relpath(path, CSRC).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    h.update(version.encode())
    h.update(" ".join(flags).encode())
    h.update(str(arch).encode())
    h.update(b"cubins kept")  # the cache folder holds the cubins the critical paths are read from
    return h.hexdigest()[:20]


_FUNC = re.compile(r"(?:Compiling entry function|Function properties for) '?([\w$]+)'?")
_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(log: str) -> dict[str, dict]:
    """{mangled name: {regs, spill, stack, static_smem}} from an `-Xptxas -v` log."""
    out: dict[str, dict] = {}
    cur = None
    for line in log.splitlines():
        m = _FUNC.search(line)
        if m:
            cur = out.setdefault(m.group(1), dict(regs=None, spill=0, stack=0, static_smem=0))
            continue
        if cur is None:
            continue
        m = _STACK.search(line)
        if m:
            cur["stack"], cur["spill"] = int(m.group(1)), int(m.group(2)) + int(m.group(3))
        m = _USED.search(line)
        if m:
            cur["regs"] = int(m.group(1))
            s = _SMEM.search(line)
            cur["static_smem"] = int(s.group(1)) if s else 0
    return out


def parse_sass_mma(sass: str) -> dict[str, str]:
    """{mangled name: "wgmma" | "mma" | ""} from `cuobjdump -sass`."""
    out: dict[str, str] = {}
    cur = None
    for line in sass.splitlines():
        m = re.search(r"Function : ([\w$]+)", line)
        if m:
            cur = m.group(1)
            out[cur] = ""
        elif cur is not None:
            if "HGMMA" in line:
                out[cur] = "wgmma"
            elif "HMMA" in line and out[cur] != "wgmma":
                out[cur] = "mma"
    return out


_PASSES = {"FwdPass": "fwd", "BwdPass": "bwd", "FwdProjPass": "fwd-proj", "BwdProjPass": "bwd-proj"}


def kernel_key(demangled: str) -> tuple[str, str, str, str] | None:
    """(kind, pass, cell, dtype) of a demangled kernel name, or None for other functions.

    kind: "persistent", "step" (the per-step kernel of stage 0), "step2" (stage 1 of a
    projection, or of the GRU with its reset gate before the product) or "cell-step" (the fused
    decode step; pass "nb1" or "nb8", its rows per CTA)."""
    cell_t = r"(\w+(?:<\w+>)?)"
    m = re.search(r"fusedrnn::(persistent_kernel|fwd_step_kernel|bwd_step_kernel)<fusedrnn::(Fwd|Bwd)(Reg)?Pass<"
                  r"fusedrnn::" + cell_t + r", (\w+)>", demangled)
    if m:  # Reg: the regularised pass (zoneout, recurrent dropout), pass "fwd+zo+rd" / "bwd+zo+rd"
        kind = "persistent" if m.group(1) == "persistent_kernel" else "step"
        pas = m.group(2).lower() + (REGULARISED if m.group(3) else "")
        return (kind, pas, CXX_CELLS.get(m.group(4), m.group(4)), CXX_DTYPES.get(m.group(5), m.group(5)))
    m = re.search(r"fusedrnn::(persistent_kernel|fwd_step_kernel|bwd_step_kernel)<fusedrnn::(Fwd|Bwd)ProjPass<(\w+)>",
                  demangled)
    if m:
        kind = {"persistent_kernel": "persistent", "fwd_step_kernel": "step", "bwd_step_kernel": "step2"}[m.group(1)]
        return (kind, m.group(2).lower() + "-proj", "lstm", CXX_DTYPES.get(m.group(3), m.group(3)))
    m = re.search(r"fusedrnn::(fwd_proj_step_kernel|bwd_proj_dh_step_kernel)<(\w+)>", demangled)
    if m:
        kind, pas = {"fwd_proj_step_kernel": ("step2", "fwd-proj"), "bwd_proj_dh_step_kernel": ("step", "bwd-proj")}[
            m.group(1)]
        return (kind, pas, "lstm", CXX_DTYPES.get(m.group(2), m.group(2)))
    m = re.search(r"fusedrnn::persistent_kernel<fusedrnn::(Fwd|Bwd)ResetPass<(\w+)>", demangled)
    if m:
        return ("persistent", m.group(1).lower(), "gru_reset_before", CXX_DTYPES.get(m.group(2), m.group(2)))
    m = re.search(r"fusedrnn::(fwd|bwd)_reset_(gates|state|dh|r)_step_kernel<(\w+)>", demangled)
    if m:
        return ("step" if m.group(2) in ("gates", "dh") else "step2", m.group(1), "gru_reset_before",
                CXX_DTYPES.get(m.group(3), m.group(3)))
    m = re.search(r"fusedrnn::cell_step_kernel<fusedrnn::" + cell_t + r", (\w+), (\d+)>", demangled)
    if m:
        return ("cell-step", f"nb{m.group(3)}", CXX_CELLS.get(m.group(1), m.group(1)),
                CXX_DTYPES.get(m.group(2), m.group(2)))
    return None


def _compile_cell(cell: str, nvcc: str, flags: list[str], out_dir: str, cuobjdump: str | None) -> dict:
    cubin = os.path.join(out_dir, f"{cell}.cubin")
    src = os.path.join(CSRC, "kernels", f"{cell}.cu")
    r = subprocess.run([nvcc] + flags + [src, "-o", cubin], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nvcc failed on {os.path.relpath(src, ROOT)}:\n{r.stderr[-3000:]}")
    facts = parse_ptxas(r.stderr + r.stdout)
    tc = {}
    if cuobjdump:
        s = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True)
        tc = parse_sass_mma(s.stdout) if s.returncode == 0 else {}
    for name, f in facts.items():
        f["tc"] = tc.get(name, "?") if cuobjdump else "?"
    return facts


def critical_paths(sass: str) -> dict[str, dict]:
    """{mangled name: {"step": critical-path counts}} of the per-step kernels in a cubin's
    SASS (one launch per step: the whole kernel is one step). The persistent kernels are
    walked per plan, on demand (cuda_walks.PlanWalks), and the decode step's kernels are not
    recurrences: both skipped here."""
    return {name: {"step": sass_path.analyse(insts).as_dict()} for name, insts in sass_path.parse(sass).items()
            if "cell_step_kernel" not in name and "persistent_kernel" not in name}


def _demangled_keys(names: list[str]) -> dict[str, tuple[str, str]]:
    """{mangled name: ("kind|pass|cell|dtype", demangled name)} of the kernels kernel_key knows."""
    filt = _tool("c++filt") or _tool("cu++filt")
    if filt is None:
        raise RuntimeError("c++filt not found: cannot name the compiled kernels")
    dem = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    out = {}
    for name, d in zip(names, dem.splitlines()):
        key = kernel_key(d)
        if key:
            out[name] = ("|".join(key), d.split("(")[0].replace("void ", ""))
    return out


def _write_json(path: str, data) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)


def _path_key() -> str:
    """The critical-path reader's version: a hash of sass_path.py and cuda_walks.py."""
    h = hashlib.sha256()
    for mod in (sass_path, cuda_walks):
        with open(mod.__file__, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def kernel_facts(arch: int, jobs: int | None = None) -> dict[tuple, dict]:
    """{(kind, direction, cell, dtype): {regs, spill, stack, static_smem, tc, path}} for
    sm_<arch>. The build (facts and cubins) is cached by a hash of csrc/; the critical paths
    read from the cubins (sass_path) by a hash of the reader as well."""
    flags, nvcc = _nvcc_flags(arch)
    if nvcc is None:
        raise RuntimeError("nvcc not found: the cuda rows need it (CUDA_HOME or PATH)")
    cache_dir = os.environ.get("FUSEDRNN_COMPILE_CACHE", os.path.join(ROOT, "build", "compile_check"))
    key = f"cuda_sm{arch}_{_cache_key(arch, nvcc, flags)}"
    path, cubins = os.path.join(cache_dir, key + ".json"), os.path.join(cache_dir, key)
    have_cubins = all(os.path.isfile(os.path.join(cubins, f"{c}.cubin")) for c in CELLS)
    cuobjdump = _tool("cuobjdump")
    if os.path.isfile(path) and have_cubins:
        with open(path) as f:
            raw = json.load(f)
    else:
        os.makedirs(cubins, exist_ok=True)
        with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as ex:
            parts = list(ex.map(lambda c: _compile_cell(c, nvcc, flags, cubins, cuobjdump), CELLS))
        mangled = {name: f for part in parts for name, f in part.items()}
        raw = {k: dict(mangled[name], name=d) for name, (k, d) in _demangled_keys(list(mangled)).items()}
        _write_json(path, raw)
    ppath = os.path.join(cache_dir, f"{key}_path_{_path_key()}.json")
    if os.path.isfile(ppath):
        with open(ppath) as f:
            paths = json.load(f)
    elif cuobjdump is None:
        paths = {}
    else:
        paths = {}
        for cell in CELLS:
            cubin = os.path.join(cubins, f"{cell}.cubin")
            sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True).stdout
            found = critical_paths(sass)
            for name, (k, _) in _demangled_keys(list(found)).items():
                paths[k] = found[name]
        _write_json(ppath, paths)
    walks = cuda_walks.PlanWalks(cubins, ppath, paths, cuobjdump, _demangled_keys) if cuobjdump else None
    for k, f in raw.items():
        f["path"] = paths.get(k)
        f["walks"] = walks  # the persistent kernel's walk of a plan: walks.counts(key, cell, layout)
    return {tuple(k.split("|")): v for k, v in raw.items()}


def _layout_text(p: dict) -> str:
    L = p["layout"]
    stages = L["stages"]
    split = " ".join(f"KS{st['KS']} W{st['WM']}x{st['WN']}" + (f" NP{st['NP']}" if st["NP"] > 1 else "")
                     for st in stages)
    text = f"{p['tier']} U{L['U']}xNU{L['NU']}" + (f" UP{L['UP']}" if L["nst"] > 1 else "")
    text += f" BG{L['BG']}xNBG{L['NBG']}" + (f" D{L['D']}" if L["D"] > 1 else "") + " " + split
    return text + (f" cluster{p['cluster']}" if p["cluster"] else "")


# The kernel contract v2's cases (issue 16): (B, H) with both directions in one launch (the
# bidirectional encoder's layers and an odd edge), (B, H, P) of the LSTM projection (the
# H1024·P256 anchor of speech models, a large batch, an odd edge), (B, I, H) of the fused
# decode step (the 2-layer decoder's two sizes, an odd edge on the scalar path).
V2_CASES = {
    "D2": ((32, 512, True), (3, 33, False)),
    # zoneout and recurrent dropout (the regularised passes), one direction: the B8·H128 anchor's
    # shape and an odd edge, neither counted as an anchor (no benchmark row runs them yet, and
    # the regularised LSTM and GRU backward spill: tests/test_cuda_compile_gate.py records it)
    "zo+rd": ((8, 128, False), (3, 33, False)),
    "proj": ((16, 1024, 256, True), (64, 1024, 256, True), (3, 33, 7, False)),
    "step": ((1, 1024, 1024, True), (8, 512, 512, True), (3, 33, 37, False)),
}


def _recurrence_rows(facts, lim, cell, dtype, B, H, anchor, proj=0, directions=1, regularised=False) -> list[Row]:
    """regularised: the kernels with zoneout and recurrent dropout (the plan is the plain one's)."""
    out = []
    variant = "D2" if directions > 1 else f"proj{proj}" if proj else "zo+rd" if regularised else None
    for direction in ("fwd", "bwd"):
        p = _C().plan_for(direction == "bwd", cell, DTYPE_CODES[dtype], B, H, lim, proj=proj, directions=directions,
                          machine=_machine())
        pas = direction + ("-proj" if proj else "") + (REGULARISED if regularised else "")
        kinds = ["persistent"] if p["persistent"] else ["step", "step2"][:p["step"]["kernels"]]
        for kind in kinds:
            f = facts.get((kind, pas, cell, dtype))
            label = variant or ("any" if kind == "persistent" else "per-step")
            if kind == "step2" and not variant:  # a two-stage cell's second per-step kernel (reset-before GRU)
                label += " 2"
            elif variant and kind != "persistent":
                label += f" per-step{'' if kind == 'step' else ' 2'}"
            layout = _layout_text(p) if kind == "persistent" else f"step U{p['step']['units']}"
            row = Row("cuda", f["name"] if f else f"{kind}<{pas},{cell},{dtype}>", cell, dtype, B, H, direction,
                      label, layout, anchor=anchor, threads=THREADS)
            if f is None:
                row.error = f"no compiled {kind} kernel for {pas} {cell} {dtype} in the build"
                out.append(row)
                continue
            row.regs, row.spill_bytes, row.tensor_cores = f["regs"], f["spill"], f["tc"]
            if kind == "persistent":  # walked for this plan's layout
                w = f.get("walks")
                set_path(row, w and w.counts("|".join((kind, pas, cell, dtype)), cell, p["layout"]), p, kind, dtype)
            else:
                set_path(row, (f.get("path") or {}).get("step"), p, kind, dtype)
            if kind == "persistent":
                row.smem = f["static_smem"] + p["smem_bytes"]
                row.grid = (p["grid"],)
                row.barrier = p["tier"] == "grid"  # flag waits: every CTA must be co-resident
                row.per_sm = occupancy(SPEC[0], THREADS, row.regs, row.smem)
                if p["cluster"] > SPEC[0].max_cluster:
                    row.error = f"cluster of {p['cluster']} CTAs exceeds the device's {SPEC[0].max_cluster}"
                elif p["cluster"] and row.per_sm < 1:
                    row.error = "a cluster CTA does not fit on one SM"
            else:
                row.smem = f["static_smem"] + p["step"]["smem"]
                row.grid = (p["step"]["grid_x"] if kind == "step" else p["step"].get("grid_x2", 0), p["step"]["grid_y"])
            out.append(row)
    return out


def set_path(row: Row, c: dict | None, plan: dict, kind: str, dtype: str):
    """The row's critical-path counts `c` (the walk of the SASS for its plan) and the machine
    model's µs per step of them; a per-step kernel adds one launch per step.

    The walk runs every loop inside the step once (sass_path: the k-steps of the step matmul,
    a warp's items, the passes over K), so at the large shapes its issue and mma terms are one
    k-step's and one pass's. The planner's estimate (csrc/plan.cpp, the same machine model)
    charges those trips, the passes and the exchange's L2 bandwidth, but not the SASS's issue
    count. A row's prediction is the larger of the two ("plan" in its terms where the
    planner's is larger), until the walk is told the loops' trips."""
    if not c:
        return
    from fusedrnn import machine  # noqa: PLC0415
    rep = sass_path.PathReport(**c)
    row.round_trips, row.barriers = c["round_trips"], c["barriers"] + c["cluster_barriers"]
    row.insts_per_step = c["insts_per_step"]
    m = machine.current()
    terms = sass_path.predicted_terms(rep, m, 32 if dtype == "fp32" else 16, THREADS // 32)
    if kind != "persistent":
        terms["launch"] = m["launch_us"]
        terms["total"] += m["launch_us"]
    plan_us = (plan.get("estimate") or {}).get("step_us", 0.0) if kind == "persistent" else 0.0
    if plan_us > terms["total"]:
        terms["plan"] = plan_us
        terms["total"] = plan_us
    row.path = dict(c, terms=terms)
    row.predicted_us = round(terms["total"], 2)
    if kind == "persistent":
        row.extra_passes = sum(st["NP"] - 1 for st in plan["layout"]["stages"])


def _cell_step_row(facts, lim, cell, dtype, B, I, H, anchor) -> Row:
    p = _C().cell_step_plan_for(cell, DTYPE_CODES[dtype], B, I, H, lim)
    nb = f"nb{p['rows_per_block']}"
    f = facts.get(("cell-step", nb, cell, dtype))
    row = Row("cuda", f["name"] if f else f"cell_step<{cell},{dtype},{nb}>", cell, dtype, B, H, "step", "cell-step",
              f"U{p['units_per_block']} KW{p['warps_per_unit']} NB{p['rows_per_block']} I{I}", anchor=anchor,
              threads=THREADS, grid=(p["grid_x"], p["grid_y"]), predicted_us=p["estimate_us"])
    if f is None:
        row.error = f"no compiled cell-step kernel {nb} for {cell} {dtype} in the build"
        return row
    row.regs, row.spill_bytes, row.tensor_cores, row.smem = f["regs"], f["spill"], f["tc"], f["static_smem"]
    return row


SPEC = [None]  # the DeviceSpec of the running rows() call (occupancy of a row)


def _machine() -> dict:
    """The C++ planner's constants of the current machine model (a calibration file's if set)."""
    from fusedrnn import machine  # noqa: PLC0415
    return machine.cxx_constants()


def _C():
    from fusedrnn import _C  # noqa: PLC0415  (the extension's plan: the very function the GPU path calls)
    return _C


def rows(spec, cases, jobs):
    """One Row per kernel launch the cuda backend would issue for each case on `spec`, then
    the v2 cases (V2_CASES) for the cells and dtypes among `cases`."""
    facts = kernel_facts(spec.arch, jobs)
    lim = limits(spec)
    SPEC[0] = spec
    out = []
    for case in cases:
        out += _recurrence_rows(facts, lim, case.cell, case.dtype, case.B, case.H, case.anchor)
    pairs = sorted({(c.cell, c.dtype) for c in cases})
    for cell, dtype in pairs:
        for B, H, anchor in V2_CASES["D2"]:
            out += _recurrence_rows(facts, lim, cell, dtype, B, H, anchor, directions=2)
        for B, H, anchor in V2_CASES["zo+rd"] if cell not in NO_MASKS else ():
            out += _recurrence_rows(facts, lim, cell, dtype, B, H, anchor, regularised=True)
        if cell == "lstm":
            for B, H, P, anchor in V2_CASES["proj"]:
                out += _recurrence_rows(facts, lim, cell, dtype, B, H, anchor, proj=P)
        for B, I, H, anchor in V2_CASES["step"] if cell not in NO_CELL_STEP else ():
            out.append(_cell_step_row(facts, lim, cell, dtype, B, I, H, anchor))
    return out


# --- predictions for benchmarks/NOTES.md ---------------------------------------------------

GEMM_TFLOPS = 600.0  # bf16 dense GEMMs outside the loop (input projection, weight and input gradients), assumed
HBM_BYTES_PER_US = 3.0e6


def prediction_rows(spec=None) -> list[dict]:
    """Per anchor and cell: the plan's tier and cost-model terms (bf16, our fastest dtype) for
    the forward (inference and training) and the backward, with cuDNN's fastest dtype from
    benchmarks/anchors.py. µs per step; the GEMMs outside the loop are spread over the steps."""
    from fusedrnn import _C  # noqa: PLC0415

    from benchmarks.anchors import _LAYER  # noqa: PLC0415
    from .rows import H100  # noqa: PLC0415

    lim = limits(spec or H100)
    out = []
    for (cell, B, T, H), ms in sorted(_LAYER.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        G = {"lstm": 4, "gru": 3, "rnn_tanh": 1}[cell]
        S = {"lstm": 5, "gru": 5, "rnn_tanh": 1}[cell]
        fw_ms, fwbw_ms = min(ms[:3]), min(ms[3:])
        best = min(range(3), key=lambda i: ms[3 + i])  # cuDNN's fastest fwbw dtype: its backward alone
        bw_ms = ms[3 + best] - ms[best]
        gemm_us = 2.0 * B * H * G * H / (GEMM_TFLOPS * 1e6)  # one (T*B, H) x (H, G*H) GEMM, per step
        row = dict(cell=cell, B=B, T=T, H=H, cudnn_fw=fw_ms * 1000 / T, cudnn_fwbw=fwbw_ms * 1000 / T,
                   cudnn_bw=bw_ms * 1000 / T)
        for d in ("fwd", "bwd"):
            p = _C.plan_for(d == "bwd", cell, DTYPE_CODES["bf16"], B, H, lim, machine=_machine())
            row[d] = p
        e_f, e_b = row["fwd"]["estimate"], row["bwd"]["estimate"]
        saved_us = S * B * H * 4 / HBM_BYTES_PER_US  # the training forward also writes the activations
        row["ours_fw"] = e_f["step_us"] + gemm_us
        fwd_train = max(e_f["step_us"], e_f["io_us"] + saved_us)
        row["ours_bw"] = e_b["step_us"] + 3 * gemm_us  # dx, dW_ih, dW_hh
        row["ours_fwbw"] = fwd_train + gemm_us + row["ours_bw"]
        out.append(row)
    return out


def prediction_table(spec=None) -> str:
    """The markdown table of benchmarks/NOTES.md's CUDA section."""
    def terms(p):
        e = p["estimate"]
        if p["tier"] == "step":
            return f"step: launch {e['sync_us']:.2f} + max(W from L2 {e['io_us']:.2f}, FMA {e['compute_us']:.2f})"
        L = p["layout"]
        shape = f"{p['tier']} U{L['U']}x{L['NU']} BG{L['BG']}x{L['NBG']}" + (f" NP{L['NP']}" if L["NP"] > 1 else "")
        return (f"{shape}: sync {e['sync_us']:.2f} + h {e['exchange_us']:.2f} + mma {e['compute_us']:.2f} "
                f"+ cell {e['pointwise_us']:.2f}; io {e['io_us']:.2f}"
                + (f"; x{e['waves']} waves" if e["waves"] > 1 else ""))
    lines = ["| cell | B | H | fw: tier, floor terms (µs) | fw | cuDNN | ratio | "
             "bw: tier, floor terms (µs) | bw | cuDNN | ratio | fwbw | cuDNN | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in prediction_rows(spec):
        cols = [f"{r['ours_fw']:.2f}", f"{r['cudnn_fw']:.2f}", f"{r['cudnn_fw'] / r['ours_fw']:.1f}x"]
        colb = [f"{r['ours_bw']:.2f}", f"{r['cudnn_bw']:.2f}", f"{r['cudnn_bw'] / r['ours_bw']:.1f}x"]
        colfb = [f"{r['ours_fwbw']:.2f}", f"{r['cudnn_fwbw']:.2f}", f"{r['cudnn_fwbw'] / r['ours_fwbw']:.1f}x"]
        lines.append("| " + " | ".join([r["cell"], str(r["B"]), str(r["H"]), terms(r["fwd"])] + cols
                                       + [terms(r["bwd"])] + colb + colfb) + " |")
    return "\n".join(lines)


# --- predictions of the kernel contract v2 (benchmarks/NOTES.md, CUDA section) -------------

ENCODER = dict(B=32, T=512, I=256, H=512, layers=2, dtype="fp16")  # the bidirectional encoder anchor
PROJ_CASES = ((16, 1024, 256), (64, 1024, 256))  # (B, H, P): the LSTM projection of speech models


def _gemm_us(flops: float) -> float:
    return flops / (GEMM_TFLOPS * 1e6)


def _step_us(lim, backward: bool, B: int, H: int, dtype: str, proj: int = 0, directions: int = 1):
    from fusedrnn import _C  # noqa: PLC0415

    p = _C.plan_for(backward, "lstm", DTYPE_CODES[dtype], B, H, lim, proj=proj, directions=directions,
                    machine=_machine())
    return p["estimate"]["step_us"], p


def encoder_prediction(spec=None) -> dict:
    """The 2-layer bidirectional LSTM encoder (ENCODER) in ms: each layer one launch with both
    directions (D=2), against the same layers with the directions one after the other (two
    D=1 launches), from the host plan's step estimates plus the GEMMs outside the loop."""
    from .rows import H100  # noqa: PLC0415

    lim = limits(spec or H100)
    e = ENCODER
    B, T, H, G = e["B"], e["T"], e["H"], 4
    out = {"fw_d2": 0.0, "fwbw_d2": 0.0, "fw_d1": 0.0, "fwbw_d1": 0.0, "plans": []}
    for layer in range(e["layers"]):
        I = e["I"] if layer == 0 else 2 * H
        gemm_in = _gemm_us(2.0 * T * B * I * 2 * G * H)  # x @ cat(W_ih_fwd, W_ih_bwd)ᵀ, the whole sequence
        gemm_bw = 2 * gemm_in + _gemm_us(2 * 2.0 * T * B * H * G * H)  # dx, dW_ih; dW_hh of both directions
        saved = 2 * 5 * B * H * 4 / HBM_BYTES_PER_US  # the training forward also writes the activations
        for D, key in ((2, "d2"), (1, "d1")):
            f, pf = _step_us(lim, False, B, H, e["dtype"], directions=D)
            b, pb = _step_us(lim, True, B, H, e["dtype"], directions=D)
            turns = 2 // D
            out["fw_" + key] += (turns * f * T + gemm_in) / 1000
            out["fwbw_" + key] += (turns * (f + saved / turns + b) * T + gemm_in + gemm_bw) / 1000
            if D == 2:
                out["plans"].append((layer, pf, pb))
    return out


def projection_prediction(spec=None) -> list[dict]:
    """µs per step of the LSTM with a projection (PROJ_CASES, bf16), forward and backward
    recurrence alone, next to the same H without a projection."""
    from .rows import H100  # noqa: PLC0415

    lim = limits(spec or H100)
    rows = []
    for B, H, P in PROJ_CASES:
        row = dict(B=B, H=H, P=P)
        for bwd, d in ((False, "fw"), (True, "bw")):
            row[d], row[d + "_plan"] = _step_us(lim, bwd, B, H, "bf16", proj=P)
            row[d + "_noproj"], _ = _step_us(lim, bwd, B, H, "bf16")
        rows.append(row)
    return rows


def v2_prediction_table(spec=None) -> str:
    """The markdown tables of the v2 predictions in benchmarks/NOTES.md's CUDA section."""
    from benchmarks.anchors import _MODEL  # noqa: PLC0415

    enc = encoder_prediction(spec)
    padded = _MODEL["encoder-padded"]  # cuDNN's fastest dtype, fw and fwbw
    cudnn = {"fw": min(padded[:3]), "fwbw": min(padded[3:])}
    lines = ["| encoder (2 layers, bidirectional, B32 T512 H512 fp16) | both directions in one launch | "
             "directions in turn | cuDNN | ratio (one launch) |", "|---|---|---|---|---|"]
    for k in ("fw", "fwbw"):
        lines.append(f"| {k} (ms) | {enc[k + '_d2']:.2f} | {enc[k + '_d1']:.2f} | {cudnn[k]:.2f} | "
                     f"{cudnn[k] / enc[k + '_d2']:.1f}x |")
    _, pf, pb = enc["plans"][0]
    lines += ["", f"Per step and layer: forward {pf['estimate']['step_us']:.2f} µs ({_layout_text(pf)}), "
              f"backward {pb['estimate']['step_us']:.2f} µs ({_layout_text(pb)}).", "",
              "| LSTM projection, bf16 | fw µs/step | fw without projection | bw µs/step | bw without projection | "
              "tier fw / bw |", "|---|---|---|---|---|---|"]
    for r in projection_prediction(spec):
        lines.append(f"| B{r['B']} H{r['H']} P{r['P']} | {r['fw']:.2f} | {r['fw_noproj']:.2f} | {r['bw']:.2f} | "
                     f"{r['bw_noproj']:.2f} | {_layout_text(r['fw_plan'])} / {_layout_text(r['bw_plan'])} |")
    return "\n".join(lines)
