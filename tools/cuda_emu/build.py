"""The CUDA kernels on the CPU: build csrc/ with FUSEDRNN_EMULATE (tools/cuda_emu) and run
fusedrnn.ops.cuda's launchers on CPU tensors through it.

The host compiler builds every kernel of csrc/ as C++; tools/cuda_emu/emu.cpp runs each CUDA
thread as a fiber, and rebuilds the tensor-core and ldmatrix fragments from the 32 lanes as
the PTX ISA lays them out. So a wrong fragment address, a broken exchange between CTAs, a
missing wait or an out-of-range shared-memory access shows here, without a GPU; what the
emulation cannot show (timing, register pressure, the real memory model) is the GPU's.

`load()` builds once per source hash into build/emu/ (about a minute on two cores) and
returns the module; `emulated()` is a context manager that points fusedrnn.ops.cuda at it,
so its forward/backward/step run on CPU tensors.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))  # tools/cuda_emu: the emulator itself
ROOT = os.path.dirname(os.path.dirname(HERE))
CSRC = os.path.join(ROOT, "csrc")
BUILD = os.path.join(ROOT, "build", "emu")
FLAGS = ["-std=c++17", "-O1", "-g", "-fPIC", "-DFUSEDRNN_EMULATE", "-Wno-attributes", "-pthread"]
_lock = threading.Lock()
_module = None


def cuda_include() -> str | None:
    """A CUDA include folder with cuda_fp16.h (the host build needs its types), or None."""
    cands = [os.path.join(os.environ[v], "include") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "include"))
    cands += sorted(glob.glob("/usr/local/cuda*/include"), reverse=True)
    for c in cands:
        if os.path.isfile(os.path.join(c, "cuda_fp16.h")):
            return c
    return None


def _sources() -> list[str]:
    return sorted(glob.glob(os.path.join(CSRC, "*.cu")) + glob.glob(os.path.join(CSRC, "kernels", "*.cu"))
                  + glob.glob(os.path.join(CSRC, "*.cpp")) + [os.path.join(HERE, "emu.cpp")])


def _digest(include: str) -> str:
    h = hashlib.sha256(" ".join(FLAGS + [include, sys.version]).encode())
    files = sorted(glob.glob(os.path.join(CSRC, "**", "*"), recursive=True)) + \
        sorted(os.path.join(HERE, n) for n in ("emu.cpp", "emu.h"))
    for f in files:
        if os.path.isfile(f):
            h.update(os.path.relpath(f, ROOT).encode())
            with open(f, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


def build() -> str:
    """Compile (if the sources changed) and return the path of the emulated _C module."""
    import pybind11

    include = cuda_include()
    if include is None:
        raise RuntimeError("the emulated CUDA build needs the CUDA headers (set CUDA_HOME)")
    out_dir = os.path.join(BUILD, _digest(include))
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    out = os.path.join(out_dir, "_C" + suffix)
    if os.path.isfile(out):
        return out
    os.makedirs(out_dir, exist_ok=True)
    cxx = os.environ.get("CXX", "c++")
    incs = ["-I" + CSRC, "-I" + HERE, "-I" + include, "-I" + sysconfig.get_paths()["include"], "-I" + pybind11.get_include()]
    jobs = []
    for src in _sources():
        obj = os.path.join(out_dir, os.path.relpath(src, ROOT).replace(os.sep, "__") + ".o")
        lang = ["-x", "c++"] if src.endswith(".cu") else []
        jobs.append([cxx] + FLAGS + incs + lang + ["-c", src, "-o", obj])

    def compile_one(cmd):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"emulated build failed: {' '.join(cmd)}\n{r.stderr[-4000:]}")
        return cmd[-1]

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objs = list(pool.map(compile_one, jobs))
    cudart = os.path.join(os.path.dirname(include), "lib64", "libcudart_static.a")
    libs = [cudart, "-ldl", "-lrt"] if os.path.isfile(cudart) else []
    tmp = out + ".tmp"
    link = [cxx, "-shared", "-pthread", "-o", tmp] + objs + libs
    r = subprocess.run(link, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"emulated link failed: {' '.join(link)}\n{r.stderr[-4000:]}")
    os.replace(tmp, out)
    return out


def load():
    """The emulated extension module (built on first use)."""
    global _module
    with _lock:
        if _module is None:
            path = build()
            spec = importlib.util.spec_from_file_location("fusedrnn_emulated._C", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            _module = mod
        return _module


@contextlib.contextmanager
def emulated():
    """fusedrnn.ops.cuda's launchers on CPU tensors, through the emulated kernels."""
    from fusedrnn.ops import cuda

    mod = load()
    saved = cuda._C, cuda._launch_context
    cuda._C = mod
    cuda._launch_context = lambda t: (0, 0)
    try:
        yield mod
    finally:
        cuda._C, cuda._launch_context = saved


# The shapes the GPU check runs (docs/anchors.md), each as the library plans it for an H100:
# cell, B, H, directions, LSTM projection (P = 3), dtype. T = 2: the plan does not depend on T.
ANCHOR_SPECS = [
    ("lstm", 1, 256, 1, False, "bfloat16"), ("lstm", 8, 128, 2, False, "bfloat16"),
    ("gru", 16, 768, 1, False, "bfloat16"), ("lstm", 16, 768, 1, False, "float32"),
    ("lstm", 16, 768, 2, True, "bfloat16"), ("lstm", 32, 512, 2, False, "float16"),
    ("lstm", 64, 1024, 1, False, "bfloat16"), ("lstm", 64, 1024, 2, False, "bfloat16"),
    ("rnn_tanh", 64, 1024, 1, False, "bfloat16"), ("lstm", 256, 512, 1, False, "bfloat16"),
]


def main(argv=None) -> int:
    """python tools/cuda_emu/build.py [--anchors]: build; with --anchors, run the anchor shapes as
    planned for an H100 (every tier the GPU will use, at full size and T = 2) against float64
    with the rule of tests/test_cuda_emulated.py. Slow (tens of minutes on two cores), so not in CI."""
    import argparse
    import time
    import warnings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--anchors", action="store_true")
    args = parser.parse_args(argv)
    print(build())
    if not args.anchors:
        return 0
    sys.path.insert(0, os.path.join(ROOT, "tests"))  # the tests' support package
    warnings.filterwarnings("ignore", "LSTM with projections")
    os.environ.setdefault("FUSEDRNN_EMU_TIMEOUT", "3600")  # one launch at full size takes minutes here
    import torch

    from support import contract, emulated
    from fusedrnn.ops import cuda

    failed = 0
    with emulated():
        os.environ[cuda.POISON_ENV] = "1"
        for cell, B, H, D, proj, dt in ANCHOR_SPECS:
            dtype = getattr(torch, dt)
            case = contract.Case(cell, D, proj=proj, lengths=tuple(2 - i % 2 for i in range(B)), T=2, B=B, H=H)
            tiers = [cuda.plan_for(cell, dtype, B, H, backward=bw, directions=D, proj_size=3 if proj else 0)["tier"]
                     for bw in (False, True)]
            t0 = time.time()
            try:
                emulated.check(case, dtype)
                verdict = "ok"
            except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
                verdict, failed = f"FAIL {type(e).__name__}: {e}", failed + 1
            print(f"{case} {dt}: forward {tiers[0]}, backward {tiers[1]}: {verdict} ({time.time() - t0:.0f} s)",
                  flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
