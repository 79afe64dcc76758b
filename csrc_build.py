"""How setup.py builds the CUDA extension fusedrnn._C, ahead of time, without torch.

The .cu files (csrc/*.cu and csrc/kernels/*.cu, globbed: one kernels/<cell>.cu per cell
instantiates every dtype) go through nvcc, the .cpp files (pybind11 binding, argument
checks, the plans) through the host compiler, and nvcc links them
with the static CUDA runtime, so the module needs only the driver at run time and
imports on machines without one. ninja runs the compiles in parallel when available.

Environment:
    FUSEDRNN_SKIP_CUDA_BUILD=1   never build the extension
    FUSEDRNN_CUDA_ARCHS="80;90"  SM architectures (also "8.0 9.0", "80,90a"); PTX of the
                                 last one is embedded too, for newer GPUs; "90-virtual"
                                 (CMake's word) is that PTX alone, no machine code: what
                                 scripts/setup_env.sh builds for the tests on a machine
                                 without a GPU (the driver would compile it on a GPU)
    FUSEDRNN_UNOPTIMISED_PTX=1   PTX-only builds ("-virtual" archs) with the device code
                                 unoptimised (cicc -O0): a seventh of the compile time, for a
                                 module whose kernels never run (setup_env.sh on a machine
                                 without a GPU); refused for builds with machine code
    CUDA_HOME / CUDA_PATH        where to find bin/nvcc (else nvcc on PATH)
    CXX                          host compiler for the .cpp files (default c++)
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")
EXT_NAME = "fusedrnn._C"
DEFAULT_ARCHS = "80;90"


def find_nvcc() -> str | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            cand = os.path.join(home, "bin", "nvcc")
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand
    return shutil.which("nvcc")


def cuda_archs(spec: str | None = None) -> list[str]:
    """FUSEDRNN_CUDA_ARCHS as a list like ["80", "90a", "90-virtual"]; ValueError on a malformed entry."""
    spec = spec if spec is not None else os.environ.get("FUSEDRNN_CUDA_ARCHS", DEFAULT_ARCHS)
    archs = []
    for item in re.split(r"[;,\s]+", spec.strip()):
        if not item:
            continue
        m = re.fullmatch(r"(?:sm_|compute_)?(\d+)(?:\.(\d))?([af]?)(-virtual)?", item)
        if not m:
            raise ValueError(f"FUSEDRNN_CUDA_ARCHS: cannot read {item!r} (expected e.g. 80, 8.0, 90a, 90-virtual)")
        arch = (m.group(1) + (m.group(2) or "")) + m.group(3) + (m.group(4) or "")
        if int(re.match(r"\d+", arch).group()) < 80:
            raise ValueError(f"FUSEDRNN_CUDA_ARCHS: sm_{arch} is too old; the kernels need sm_80 or newer")
        if arch not in archs:
            archs.append(arch)
    if not archs:
        raise ValueError("FUSEDRNN_CUDA_ARCHS is empty")
    return archs


def gencode_flags(archs: list[str]) -> list[str]:
    """Machine code for each architecture and PTX for the last; an "NN-virtual" one: its PTX only."""
    flags = []
    for a in archs:
        v = a.removesuffix("-virtual")
        flags += ["-gencode", f"arch=compute_{v},code={'compute' if v != a else 'sm'}_{v}"]
    if not archs[-1].endswith("-virtual"):
        flags += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
    return flags


def skip_reason() -> str | None:
    """Why the extension is not built here, or None."""
    if os.environ.get("FUSEDRNN_SKIP_CUDA_BUILD", "").lower() in ("1", "true", "yes", "on"):
        return "FUSEDRNN_SKIP_CUDA_BUILD is set"
    if find_nvcc() is None:
        return "nvcc was not found (set CUDA_HOME or put nvcc on PATH)"
    try:
        import pybind11  # noqa: F401
    except ImportError:
        return "pybind11 is not installed in the build environment (pip install pybind11; --no-build-isolation)"
    return None


def sources() -> tuple[list[str], list[str]]:
    cu = sorted(glob.glob(os.path.join(CSRC, "*.cu")) + glob.glob(os.path.join(CSRC, "kernels", "*.cu")))
    cpp = sorted(glob.glob(os.path.join(CSRC, "*.cpp")))
    return cu, cpp


def cuda_extensions() -> list[Extension]:
    reason = skip_reason()
    if reason:
        print(f"fusedrnn: not building the CUDA extension {EXT_NAME}: {reason}", file=sys.stderr)
        return []
    cu, cpp = sources()
    rel = [os.path.relpath(p, ROOT) for p in cu + cpp]
    headers = glob.glob(os.path.join(CSRC, "**", "*.h"), recursive=True) + \
        glob.glob(os.path.join(CSRC, "**", "*.cuh"), recursive=True)
    return [Extension(EXT_NAME, sources=rel, depends=[os.path.relpath(h, ROOT) for h in headers])]


#: the .cpp files that include pybind11 (and so Python.h): the binding, built for one Python.
#: Everything else (the kernels, the launchers, the plans) needs no Python at all and can be
#: built ahead into the kernel library (KERNEL_LIBRARY; tools/device_check/prebuilt.py).
BINDING_SOURCES = ("binding.cpp", "validate.cpp")
KERNEL_LIBRARY = "libfusedrnn_cuda.so"


def library_sources() -> list[str]:
    """The sources of the kernel library: every .cu, and the .cpp files that are not the binding."""
    cu, cpp = sources()
    return cu + [p for p in cpp if os.path.basename(p) not in BINDING_SOURCES]


def binding_sources() -> list[str]:
    return [p for p in sources()[1] if os.path.basename(p) in BINDING_SOURCES]


UNOPTIMISED_ENV = "FUSEDRNN_UNOPTIMISED_PTX"


def unoptimised_device_flags(archs: list[str]) -> list[str]:
    """["-Xcicc", "-O0"] under FUSEDRNN_UNOPTIMISED_PTX=1, where every arch is PTX only;
    ValueError where machine code would be built from it (a slow kernel, silently)."""
    if os.environ.get(UNOPTIMISED_ENV, "") != "1":
        return []
    real = [a for a in archs if not a.endswith("-virtual")]
    if real:
        raise ValueError(f"{UNOPTIMISED_ENV}=1 is for PTX-only builds (FUSEDRNN_CUDA_ARCHS like 90-virtual), "
                         f"not machine code for {', '.join(real)}")
    return ["-Xcicc", "-O0"]


def nvcc_flags(archs: list[str], hidden: bool = True) -> list[str]:
    """nvcc's flags; hidden=False exports the C++ API (api.h, plan.h) from the kernel library."""
    vis = ["-Xcompiler", "-fvisibility=hidden"] if hidden else []
    return (["-O3", "-std=c++17", "-DNDEBUG", "-lineinfo", "-Xcompiler", "-fPIC", *vis,
             "-Xfatbin", "-compress-all", "-I" + CSRC] + unoptimised_device_flags(archs) + gencode_flags(archs))


def cxx_flags(python: bool, hidden: bool = True) -> list[str]:
    """The host compiler's flags; python=True adds Python's and pybind11's headers (the binding)."""
    includes = ["-I" + CSRC]
    if python:
        import pybind11
        includes += ["-I" + sysconfig.get_paths()["include"], "-I" + pybind11.get_include()]
    vis = ["-fvisibility=hidden"] if hidden else []
    return ["-O2", "-std=c++17", "-DNDEBUG", "-fPIC", *vis, "-Wall"] + includes


def _compile_jobs(srcs: list[str], build_dir: str, nv: list[str], cx: list[str]) -> list[tuple[str, str, list[str]]]:
    jobs = []
    for src in srcs:
        obj = os.path.join(build_dir, os.path.relpath(src, CSRC).replace(os.sep, "__") + ".o")
        if src.endswith(".cu"):
            cmd = [find_nvcc()] + nv + ["-c", src, "-o", obj]
        else:
            cmd = [os.environ.get("CXX", "c++")] + cx + ["-c", src, "-o", obj]
        jobs.append((src, obj, cmd))
    return jobs


def _commands(out: str, build_dir: str) -> tuple[list[tuple[str, str, list[str]]], list[str]]:
    """([(source, object, compile command)], link command) for the extension."""
    cu, cpp = sources()
    jobs = _compile_jobs(cu + cpp, build_dir, nvcc_flags(cuda_archs()), cxx_flags(python=True))
    link = [find_nvcc(), "-shared", "--cudart=static", "-Xcompiler", "-fPIC", "-o", out] + [o for _, o, _ in jobs]
    return jobs, link


def library_commands(out: str, build_dir: str, archs: list[str],
                     extra: list[str] = ()) -> tuple[list[tuple[str, str, list[str]]], list[str]]:
    """The kernel library `out` (KERNEL_LIBRARY): no Python header, no libpython; the CUDA
    runtime linked in statically and kept private (--exclude-libs), the C++ API exported.
    `extra`: more .cpp files (prebuilt.py adds the one that carries the build's manifest)."""
    jobs = _compile_jobs(library_sources() + list(extra), build_dir, nvcc_flags(archs, hidden=False),
                         cxx_flags(python=False, hidden=False))
    link = [find_nvcc(), "-shared", "--cudart=static", "-Xcompiler", "-fPIC", "-Xlinker", "--exclude-libs,ALL",
            "-Xlinker", "-soname," + KERNEL_LIBRARY, "-o", out] + [o for _, o, _ in jobs]
    return jobs, link


def binding_commands(out: str, build_dir: str, library: str) -> tuple[list[tuple[str, str, list[str]]], list[str]]:
    """The binding alone, for this Python, linked against the kernel library `library`, which
    must lie beside `out` when it is imported (the binding looks for it in its own folder)."""
    jobs = _compile_jobs(binding_sources(), build_dir, [], cxx_flags(python=True))
    link = [os.environ.get("CXX", "c++"), "-shared", "-o", out] + [o for _, o, _ in jobs] + \
        [os.path.abspath(library), "-Wl,-rpath,$ORIGIN"]
    return jobs, link


def _ninja_escape(s: str) -> str:
    return s.replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def _ninja_binary() -> str | None:
    path = shutil.which("ninja")
    if path:
        return path
    try:
        import ninja  # the PyPI package ships the binary
        cand = os.path.join(ninja.BIN_DIR, "ninja")
        return cand if os.path.isfile(cand) else None
    except ImportError:
        return None


def _quote(args: list[str]) -> str:
    import shlex
    return " ".join(shlex.quote(a) for a in args)


def build_cuda_extension(out: str, build_dir: str, jobs_n: int | None = None) -> None:
    """Compile and link fusedrnn._C into `out`; raises CalledProcessError on a compile error."""
    out = os.path.abspath(out)
    os.makedirs(build_dir, exist_ok=True)
    jobs, link = _commands(out, build_dir)
    run_build(jobs, link, out, build_dir, jobs_n)


def run_build(jobs, link: list[str], out: str, build_dir: str, jobs_n: int | None = None) -> None:
    """Run compile `jobs` then `link` into `out`: with ninja (incremental) when available."""
    out = os.path.abspath(out)
    os.makedirs(build_dir, exist_ok=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    ninja = _ninja_binary()
    if ninja:
        lines = ["ninja_required_version = 1.3", ""]
        for i, (src, obj, cmd) in enumerate(jobs):
            dep = "-MD -MF $out.d" if src.endswith(".cu") else "-MMD -MF $out.d"
            lines += [f"rule cc{i}", f"  command = {_quote(cmd).replace('$', '$$')} {dep}", "  depfile = $out.d", "  deps = gcc",
                      f"  description = compile {os.path.relpath(src, ROOT)}", "",
                      f"build {_ninja_escape(obj)}: cc{i} {_ninja_escape(src)}", ""]
        lines += ["rule link", f"  command = {_quote(link).replace('$', '$$')}", "  description = link " + os.path.basename(out), "",
                  f"build {_ninja_escape(out)}: link " + " ".join(_ninja_escape(o) for _, o, _ in jobs),
                  ""]
        with open(os.path.join(build_dir, "build.ninja"), "w") as f:
            f.write("\n".join(lines))
        cmd = [ninja, "-C", build_dir] + (["-j", str(jobs_n)] if jobs_n else [])
        subprocess.run(cmd, check=True)
        return
    workers = jobs_n or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for r in pool.map(lambda j: subprocess.run(j[2], check=True), jobs):
            pass
    subprocess.run(link, check=True)


class BuildExt(build_ext):
    """build_ext that builds fusedrnn._C with nvcc (other extensions: setuptools' way)."""

    def build_extension(self, ext):
        if ext.name != EXT_NAME:
            return super().build_extension(ext)
        out = self.get_ext_fullpath(ext.name)
        build_dir = os.path.join(os.path.abspath(self.build_temp), "fusedrnn_C")
        jobs_n = self.parallel if isinstance(self.parallel, int) and self.parallel > 0 else None
        build_cuda_extension(out, build_dir, jobs_n)
