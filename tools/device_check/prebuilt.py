"""The CUDA kernels built ahead, here, so that the GPU window never runs nvcc.

    python -m tools.device_check.prebuilt build [--archs 90] [--dir build/prebuilt]
    python -m tools.device_check.prebuilt check [--arch 90] [--dir build/prebuilt]
    python -m tools.device_check.prebuilt load  [--arch 90] [--dir build/prebuilt]

`build` compiles every kernel, launcher and plan of csrc/ (csrc_build.library_sources) into
one shared library, KERNEL_LIBRARY, that needs no Python: no Python header is included, no
libpython is linked, and the CUDA runtime is linked in statically. Beside it, manifest.json
records what it was built from (the hash of csrc/ and csrc_build.py, the commit), for which
SM architectures, with which nvcc, and the library's own sha256; it is written last, so a
build cut short leaves no manifest. The same facts are compiled into the library
(`fusedrnn_build_info()`, a plain C function), so a ctypes load can read them too.

`check` says whether the artifact may be used for this tree on this GPU: a missing or
unreadable manifest, a library whose sha256 differs, sources that changed since (a commit
that touches neither csrc/ nor csrc_build.py keeps it valid: the commit is recorded, the
sources decide), an architecture it was not built for, or a library that needs libpython
are each refused with the reason. `load` checks, then compiles only the pybind11 binding
(csrc_build.BINDING_SOURCES, two host files: seconds) for the running Python against the
library, into fusedrnn/ beside a copy of it, and imports it. The device check's load stage
does exactly this (stages.py). A normal `pip install` still builds everything from source.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from . import elf_deps
from .elf_deps import needed_libraries, python_dependencies

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = Path("build") / "prebuilt"
OBJECTS = Path("build") / "prebuilt-objects"   # nvcc's objects (incremental; never carried)
BINDING_OBJECTS = Path("build") / "binding-objects"
MANIFEST = "manifest.json"
SCHEMA = 1
DEFAULT_ARCHS = "90"   # the lent machines are H100 and H200 (sm_90)
REFUSED = 3            # exit status of `check`/`load` when the artifact may not be used


def _csrc_build():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import csrc_build  # noqa: PLC0415
    return csrc_build


CALIBRATE_SOURCE = Path("tools") / "device_check" / "calibrate.cu"
CALIBRATE_LIBRARY = "libfusedrnn_calibrate.so"


def source_hash(repo: Path = ROOT) -> str:
    """sha256 over every file of csrc/, csrc_build.py and the calibration kernels (paths and contents)."""
    h = hashlib.sha256()
    files = sorted(p for p in (repo / "csrc").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for p in files + [repo / "csrc_build.py", repo / CALIBRATE_SOURCE]:
        h.update(str(p.relative_to(repo)).encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_info(library: Path) -> dict:
    """What the library says it was built from (its plain C function fusedrnn_build_info),
    read through ctypes: works from any Python, with or without torch."""
    import ctypes  # noqa: PLC0415
    fn = ctypes.CDLL(str(library)).fusedrnn_build_info
    fn.restype = ctypes.c_char_p
    return json.loads(fn().decode())


#: the exported symbol whose address gives the library's load base (calibrate.py)
BASE_SYMBOL = "fusedrnn_build_info"


def persistent_kernels(library: Path) -> dict:
    """{demangled name: offset} of the persistent kernels' host stubs (the handles the CUDA
    runtime knows them by; `static`, so found in the full symbol table), and BASE_SYMBOL's
    offset under its own name: the calibration's occupancy query turns them into addresses."""
    found = elf_deps.symbol_offsets(library, lambda n: (n.startswith("_Z") and "persistent_kernel" in n
                                                        and "." not in n and "__device_stub" not in n)
                                    or n == BASE_SYMBOL)
    names = [n for n in found if n != BASE_SYMBOL]
    try:
        plain = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                               timeout=60).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        plain = names
    out = {demangled: found[mangled] for mangled, demangled in zip(names, plain)}
    if BASE_SYMBOL in found:
        out[BASE_SYMBOL] = found[BASE_SYMBOL]
    return out


# ---- build (here, ahead of the GPU window) ---------------------------------------------------------

def _tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return (next((ln for ln in lines if "release" in ln), None) or (lines[0] if lines else ""))


def _info_source(info: dict) -> str:
    text = json.dumps(info, sort_keys=True).replace("\\", "\\\\").replace('"', '\\"')
    return ("// written by tools/device_check/prebuilt.py: what this library was built from\n"
            'extern "C" __attribute__((visibility("default"))) const char* fusedrnn_build_info(void) {\n'
            f'  return "{text}";\n}}\n')


def build(repo: Path = ROOT, out: Path | None = None, archs: str = DEFAULT_ARCHS, jobs_n: int | None = None,
          commit: str | None = None) -> dict:
    """Compile the kernel library into `out` (default build/prebuilt) and write its manifest."""
    cb = _csrc_build()
    out = (repo / (out or DEFAULT_DIR)).resolve()
    objs = (repo / OBJECTS).resolve()
    arch_list = cb.cuda_archs(archs)
    if cb.find_nvcc() is None:
        raise SystemExit("prebuilt: nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
    t0 = time.monotonic()
    from .__main__ import _git_commit  # noqa: PLC0415  (the device check's; imported here: no cycle)
    info = {"source_hash": source_hash(repo), "archs": arch_list, "commit": commit if commit is not None
            else _git_commit(repo)}
    objs.mkdir(parents=True, exist_ok=True)
    extra = objs / "build_info.cpp"
    if not extra.exists() or extra.read_text() != _info_source(info):
        extra.write_text(_info_source(info))
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)          # no manifest until the library is complete
    lib = out / cb.KERNEL_LIBRARY
    jobs, link = cb.library_commands(str(lib), str(objs), arch_list, extra=[str(extra)])
    cb.run_build(jobs, link, str(lib), str(objs), jobs_n)
    cal = out / CALIBRATE_LIBRARY
    cal_objs = objs / "calibrate"
    cal_jobs = [(str(repo / CALIBRATE_SOURCE), str(cal_objs / "calibrate.o"),
                 [cb.find_nvcc()] + cb.nvcc_flags(arch_list, hidden=False)
                 + ["-c", str(repo / CALIBRATE_SOURCE), "-o", str(cal_objs / "calibrate.o")])]
    cal_link = [cb.find_nvcc(), "-shared", "--cudart=static", "-Xlinker", "--exclude-libs,ALL", "-o", str(cal),
                str(cal_objs / "calibrate.o")]
    cb.run_build(cal_jobs, cal_link, str(cal), str(cal_objs), jobs_n)
    manifest = dict(info, schema=SCHEMA, library=cb.KERNEL_LIBRARY, library_sha256=file_sha256(lib),
                    calibrate_library=CALIBRATE_LIBRARY, calibrate_sha256=file_sha256(cal),
                    persistent_kernels=persistent_kernels(lib),
                    library_bytes=lib.stat().st_size, needed=needed_libraries(lib),
                    nvcc=_tool_version([cb.find_nvcc(), "--version"]),
                    cxx=_tool_version([os.environ.get("CXX", "c++"), "--version"]),
                    built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    build_seconds=round(time.monotonic() - t0, 1))
    tmp = out / (MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest


# ---- check (anywhere: the GPU host has no nvcc time to spare) ----------------------------------------

def check(repo: Path = ROOT, where: Path | None = None, arch: str | None = None) -> tuple[dict | None, str]:
    """(manifest, "") if the artifact in `where` may be used for this tree and, given `arch`
    (e.g. "90", from the device's compute capability), this GPU; else (manifest or None, why not)."""
    where = (repo / (where or DEFAULT_DIR)).resolve()
    path = where / MANIFEST
    if not path.exists():
        return None, (f"no prebuilt CUDA artifact: {path} is missing (build it here: "
                      f"python -m tools.device_check.prebuilt build)")
    try:
        m = json.loads(path.read_text())
    except ValueError as e:
        return None, f"{path} is unreadable ({e}): rebuild it"
    if m.get("schema") != SCHEMA:
        return m, f"{path}: schema {m.get('schema')!r}, this checker reads {SCHEMA}: rebuild it"
    lib = where / str(m.get("library", ""))
    for name, digest in ((m.get("library"), m.get("library_sha256")),
                         (m.get("calibrate_library"), m.get("calibrate_sha256"))):
        path = where / str(name)
        if not name or not path.is_file():
            return m, f"the prebuilt library {path} is missing: rebuild it"
        if file_sha256(path) != digest:
            return m, f"{path} is not the library its manifest describes (sha256 differs): rebuild it"
    now = source_hash(repo)
    if m.get("source_hash") != now:
        return m, (f"stale prebuilt CUDA artifact: built from sources {str(m.get('source_hash'))[:12]} "
                   f"(commit {str(m.get('commit') or '?')[:12]}), but csrc/ and csrc_build.py here hash to "
                   f"{now[:12]}: rebuild it here (python -m tools.device_check.prebuilt build)")
    if arch is not None and arch not in m.get("archs", []):
        return m, (f"the prebuilt CUDA artifact holds sm_{', sm_'.join(m.get('archs', []))}, not this GPU's "
                   f"sm_{arch}: rebuild it with --archs {arch}")
    tied = python_dependencies(lib)
    if tied:
        return m, f"{lib} needs {', '.join(tied[:5])}: it would tie the artifact to one Python"
    return m, ""


class Refused(RuntimeError):
    """The artifact is missing, stale, or not for this GPU."""


def load(repo: Path = ROOT, where: Path | None = None, arch: str | None = None, jobs_n: int | None = None,
         python: str = sys.executable) -> dict:
    """check(), then build the binding for `python` against the library, into fusedrnn/, and
    import it in a child process. Raises RuntimeError with the reason when refused or broken."""
    manifest, why = check(repo, where, arch)
    if why:
        raise Refused(why)
    cb = _csrc_build()
    where = (repo / (where or DEFAULT_DIR)).resolve()
    pkg = repo / "fusedrnn"
    lib = pkg / cb.KERNEL_LIBRARY
    part = lib.with_name(lib.name + ".part")
    shutil.copyfile(where / manifest["library"], part)
    os.replace(part, lib)   # a new file: a process that has the old one mapped keeps it intact
    tag = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    for old in pkg.glob("_C.*.so"):
        if old.name != "_C" + tag:
            old.unlink()   # another Python's or a full build's module: never the one imported
    objs = (repo / BINDING_OBJECTS / tag.strip(".")).resolve()
    out = pkg / ("_C" + tag)
    jobs, link = cb.binding_commands(str(out), str(objs), str(lib))
    cb.run_build(jobs, link, str(out), str(objs), jobs_n)
    probe = ("import json, sys, fusedrnn._C as m; from tools.device_check.prebuilt import build_info; "
             "print(json.dumps({'module': m.__file__, 'source_hash': build_info(sys.argv[1])['source_hash']}))")
    done = subprocess.run([python, "-c", probe, str(lib)], cwd=repo, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(repo)))
    if done.returncode != 0:
        raise RuntimeError("fusedrnn._C built against the prebuilt library does not import: "
                           + (done.stderr.strip().splitlines() or ["?"])[-1])
    got = json.loads(done.stdout.strip().splitlines()[-1])
    if got["source_hash"] != manifest["source_hash"]:
        raise RuntimeError(f"the loaded library says it was built from {got['source_hash'][:12]}, "
                           f"its manifest {manifest['source_hash'][:12]}")
    return dict(manifest, module=got["module"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.device_check.prebuilt", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("build", "check", "load"))
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the artifact's folder (default build/prebuilt)")
    p.add_argument("--archs", default=os.environ.get("FUSEDRNN_CUDA_ARCHS", DEFAULT_ARCHS),
                   help="build: SM architectures, as FUSEDRNN_CUDA_ARCHS (default 90)")
    p.add_argument("--arch", default=None, help="check/load: the GPU's architecture, e.g. 90")
    p.add_argument("-j", type=int, default=None, help="parallel compiles")
    args = p.parse_args(argv)
    try:
        if args.action == "build":
            m = build(ROOT, args.dir, args.archs, args.j)
            print(f"prebuilt: {m['library']} ({m['library_bytes'] / 2**20:.1f} MiB) for sm_{', sm_'.join(m['archs'])} "
                  f"in {m['build_seconds']:.0f}s; needs {', '.join(m['needed'])}")
            return 0
        if args.action == "check":
            m, why = check(ROOT, args.dir, args.arch)
            print(f"prebuilt: REFUSED: {why}" if why else f"prebuilt: usable ({m['library']}, sm_{', sm_'.join(m['archs'])}, sources "
                         f"{m['source_hash'][:12]}, built {m['built_at']})")
            return REFUSED if why else 0
        t0 = time.monotonic()
        m = load(ROOT, args.dir, args.arch, args.j)
        print(f"prebuilt: loaded {m['module']} against {m['library']} for sm_{', sm_'.join(m['archs'])} (sources "
              f"{m['source_hash'][:12]}, commit {str(m.get('commit'))[:12]}); binding compiled and imported in "
              f"{time.monotonic() - t0:.0f}s")
        return 0
    except Refused as e:
        print(f"prebuilt: REFUSED: {e}", flush=True)
        return REFUSED
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"prebuilt: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
