"""Host-compiler builds of csrc/ as Python extension modules for the tests, cached by the hash
of their sources under build/<name>/: the CUDA emulator (tools/cuda_emu) and the C++
self-tests (tools/cuda_selftest). Neither is part of the installed fusedrnn._C.

The host build needs the CUDA headers (cuda_runtime.h, cuda_fp16.h) for the types and links
the static CUDA runtime where the toolkit has it (cudaGetErrorName and friends); no GPU."""
from __future__ import annotations

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


def digest(flags: list[str], include: str, files: list[str]) -> str:
    """The cache key: the flags, the CUDA headers' folder, this Python and every file's path and bytes."""
    h = hashlib.sha256(" ".join(list(flags) + [include, sys.version]).encode())
    for f in sorted(files):
        if os.path.isfile(f):
            h.update(os.path.relpath(f, ROOT).encode())
            with open(f, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


def csrc_files() -> list[str]:
    """Every file of csrc/ (what a host build of it depends on)."""
    return sorted(glob.glob(os.path.join(CSRC, "**", "*"), recursive=True))


def build_module(out_dir: str, module: str, sources: list[str], flags: list[str], includes: list[str]) -> str:
    """Compile `sources` (.cu as C++) into the extension module `module` in `out_dir`, unless it is
    there already; returns its path. Raises RuntimeError with the compiler's message on failure."""
    from filelock import FileLock  # torch's own dependency

    out = os.path.join(out_dir, module + importlib.machinery.EXTENSION_SUFFIXES[0])
    if os.path.isfile(out):
        return out
    os.makedirs(out_dir, exist_ok=True)
    # two test processes (pytest -n 2) wanting the same build: one compiles, the other waits for it
    with FileLock(out_dir + ".lock"):
        if not os.path.isfile(out):
            _compile_and_link(out, module, sources, flags, includes)
    return out


def _compile_and_link(out: str, module: str, sources: list[str], flags: list[str], includes: list[str]) -> None:
    import pybind11

    out_dir = os.path.dirname(out)
    cxx = os.environ.get("CXX", "c++")
    incs = ["-I" + i for i in includes] + ["-I" + sysconfig.get_paths()["include"], "-I" + pybind11.get_include()]
    jobs = []
    for src in sources:
        obj = os.path.join(out_dir, os.path.relpath(src, ROOT).replace(os.sep, "__") + ".o")
        lang = ["-x", "c++"] if src.endswith(".cu") else []
        jobs.append([cxx] + flags + incs + lang + ["-c", src, "-o", obj])

    def compile_one(cmd):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"host build of {module} failed: {' '.join(cmd)}\n{r.stderr[-4000:]}")
        return cmd[-1]

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objs = list(pool.map(compile_one, jobs))
    include = next((i for i in includes if os.path.isfile(os.path.join(i, "cuda_runtime.h"))), None)
    cudart = os.path.join(os.path.dirname(include), "lib64", "libcudart_static.a") if include else ""
    libs = [cudart, "-ldl", "-lrt"] if os.path.isfile(cudart) else []
    tmp = out + ".tmp"
    link = [cxx, "-shared", "-pthread", "-o", tmp] + objs + libs
    r = subprocess.run(link, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"host link of {module} failed: {' '.join(link)}\n{r.stderr[-4000:]}")
    os.replace(tmp, out)


def import_path(path: str, name: str):
    """The extension module at `path`, imported under `name` (not fusedrnn._C's)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Loader:
    """load(): the module `build()` makes, built and imported once per process (thread-safe)."""

    def __init__(self, build, name: str):
        self._build, self._name, self._lock, self._module = build, name, threading.Lock(), None

    def __call__(self):
        with self._lock:
            if self._module is None:
                self._module = import_path(self._build(), self._name)
            return self._module
