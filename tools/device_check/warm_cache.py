"""Warm Triton's cache here for the GPU host: every Triton kernel the compile gate knows the
library launches (tools/compile_check, the same launch-time specialisation as the JIT),
compiled for sm_90 by Triton 3.6.0 (the GPU host's) under the cache key that host computes.

    PYTHONPATH=<triton 3.6.0 folder>:$PWD python -m tools.device_check.warm_cache \\
        --wheel <triton-3.6.0-cp312-...whl> [--out build/triton_cache] [--shapes all] [-j N]

--wheel is the GPU host's Triton wheel (cp312): only its libtriton.so's sha256 is read, and
its Python files are checked to equal those of the Triton running here (triton_cache.py says
why). The folder gets fusedrnn-cache-manifest.json (Triton version, the key's digest, the
ptxas version's digest, the arch, entries, time), which the device check compares with the
GPU host's Triton before the tests. It travels as an ignored folder named in the device
call's `carry`; there TRITON_CACHE_DIR points at it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import zipfile
from pathlib import Path

from . import triton_cache

TARGET_TRITON = "3.6.0"
HOST_KEY_ENV = "FUSEDRNN_TRITON_HOST_KEY"
ARCH = 90


def wheel_facts(wheel: Path, installed: Path) -> tuple[str, list[str]]:
    """(sha256 of the wheel's libtriton.so, the key-relevant .py files that differ from `installed`)."""
    lib_sha, differ = None, []
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name == "triton/_C/libtriton.so":
                lib_sha = hashlib.sha256(z.read(name)).hexdigest()
            elif name.endswith(".py") and name.split("/")[1:2] in (["compiler"], ["backends"], ["language"]) \
                    or name == "triton/runtime/cache.py":
                local = installed / name.split("/", 1)[1]
                if not local.is_file() or hashlib.sha256(z.read(name)).hexdigest() != \
                        hashlib.sha256(local.read_bytes()).hexdigest():
                    differ.append(name)
    if lib_sha is None:
        raise ValueError(f"{wheel} holds no triton/_C/libtriton.so")
    return lib_sha, differ


def use_host_key() -> None:
    """In a compiling process: Triton's cache key as the GPU host computes it (HOST_KEY_ENV)."""
    key = os.environ.get(HOST_KEY_ENV)
    if key:
        import triton.runtime.cache as cache  # noqa: PLC0415
        cache.triton_key = lambda: key


def warm(out: Path, wheel: Path, shapes: str, cells, dtypes, jobs: int) -> dict:
    import triton  # noqa: PLC0415
    if triton.__version__ != TARGET_TRITON:
        raise SystemExit(f"warm_cache: Triton {triton.__version__} is imported; the GPU host runs {TARGET_TRITON}: "
                         f"put a {TARGET_TRITON} folder first on PYTHONPATH (scripts/triton_compat.sh makes one)")
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("warm_cache: unset TRITON_INTERPRET (the interpreter compiles nothing)")
    for var in ("TRITON_PTXAS_PATH", "TRITON_LIBDEVICE_PATH"):
        if os.environ.get(var):
            raise SystemExit(f"warm_cache: unset {var}: the GPU host uses Triton's own, and the key records it")
    installed = Path(triton.__file__).parent
    lib_sha, differ = wheel_facts(wheel, installed)
    if differ:
        raise SystemExit(f"warm_cache: {wheel.name} is not the Triton running here: {len(differ)} files differ "
                         f"({', '.join(differ[:3])})")
    key = triton_cache.host_triton_key(installed, triton.__version__, lib_sha)
    os.environ[HOST_KEY_ENV] = key
    out.mkdir(parents=True, exist_ok=True)
    os.environ["TRITON_CACHE_DIR"] = str(out.resolve())
    os.environ["TRITON_STORE_BINARY_ONLY"] = "1"   # a hit reads the cubin and the metadata only (not in the key)
    from triton.backends.nvidia.compiler import get_ptxas_version  # noqa: PLC0415
    from triton._C.libtriton import get_cache_invalidating_env_vars  # noqa: PLC0415
    if get_cache_invalidating_env_vars():
        raise SystemExit(f"warm_cache: unset {', '.join(get_cache_invalidating_env_vars())}: they enter the key")
    from ..compile_check import triton_rows  # noqa: PLC0415
    from ..compile_check.cases import make_cases  # noqa: PLC0415
    from ..compile_check.rows import DEVICES  # noqa: PLC0415
    before = triton_cache.entries(out)
    t0 = time.monotonic()
    rows = triton_rows.rows(DEVICES["H100"], make_cases(shapes, cells, dtypes), jobs, initializer=use_host_key)
    seconds = time.monotonic() - t0
    triton_cache.relocate(out, prune=True)
    errors = [f"{r.cell} {r.dtype} B{r.B} H{r.H} {r.direction}: {r.error}" for r in rows if r.error]
    manifest = {"triton": triton.__version__, "host_python": "3.12", "arch": ARCH,
                "triton_key_sha256": triton_cache.key_digest(key),
                "ptxas_sha256": hashlib.sha256(get_ptxas_version(ARCH).encode()).hexdigest(),
                "ptxas": get_ptxas_version(ARCH).strip().splitlines()[-1],
                "libtriton_sha256": lib_sha, "shapes": shapes, "cells": list(cells), "dtypes": list(dtypes),
                "launches": len(rows), "entries": triton_cache.entries(out),
                "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()), "new_entries":
                triton_cache.entries(out) - before, "seconds": round(seconds, 1), "errors": errors[:20],
                "warmed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / triton_cache.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv=None) -> int:
    from ..compile_check.cases import CELLS, DTYPES  # noqa: PLC0415
    p = argparse.ArgumentParser(prog="python -m tools.device_check.warm_cache", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=triton_cache.DEFAULT_DIR)
    p.add_argument("--wheel", type=Path, required=True, help="the GPU host's Triton wheel (cp312)")
    p.add_argument("--shapes", default="all", choices=("anchors", "ci", "sweep", "all"))
    p.add_argument("--cells", default=",".join(CELLS))
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("-j", "--jobs", type=int, default=1, help="compiling processes (default 1)")
    args = p.parse_args(argv)
    m = warm(args.out, args.wheel, args.shapes, args.cells.split(","), args.dtypes.split(","), args.jobs)
    print(f"warm_cache: {m['launches']} launches, {m['new_entries']} kernels compiled, {m['entries']} in "
          f"{args.out} ({m['seconds']:.0f}s); {len(m['errors'])} errors")
    return 1 if m["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
