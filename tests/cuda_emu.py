"""The CUDA kernels on the CPU: build csrc/ with FUSEDRNN_EMULATE (csrc/emu) and run
fusedrnn.ops.cuda's launchers on CPU tensors through it.

The host compiler builds every kernel of csrc/ as C++; csrc/emu/emu.cpp runs each CUDA
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
                  + glob.glob(os.path.join(CSRC, "*.cpp")) + [os.path.join(CSRC, "emu", "emu.cpp")])


def _digest(include: str) -> str:
    h = hashlib.sha256(" ".join(FLAGS + [include, sys.version]).encode())
    files = sorted(glob.glob(os.path.join(CSRC, "**", "*"), recursive=True))
    for f in files:
        if os.path.isfile(f):
            h.update(os.path.relpath(f, CSRC).encode())
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
    incs = ["-I" + CSRC, "-I" + include, "-I" + sysconfig.get_paths()["include"], "-I" + pybind11.get_include()]
    jobs = []
    for src in _sources():
        obj = os.path.join(out_dir, os.path.relpath(src, CSRC).replace(os.sep, "__") + ".o")
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
