"""Triton's on-disk cache, warmed here (warm_cache.py) and carried to the GPU host.

What a cached kernel's key is made of (triton/compiler/compiler.py `compile` and
runtime/cache.py `get_cache_key`, Triton 3.6.0): `triton_key()` (the version, the sha256 of
every .py file of triton/compiler, triton/backends and triton/language, of
runtime/cache.py, and of the binary triton/_C/libtriton.so), the kernel source's hash (the
JIT function's source and line, what it calls, the constexpr globals it reads, the
launch's signature, specialisation and constants), the backend's hash (the output of
`ptxas --version` of the ptxas Triton uses, and the arch), the options' hash (num_warps,
num_stages, ..., the libdevice file's hash) and the cache-invalidating TRITON_* variables
that are set. libtriton.so is built for one Python (the wheels for 3.11 and 3.12 differ),
so the warm-up computes the key the GPU host's Triton will compute (`host_triton_key`,
from that wheel's libtriton.so) and uses it in place of its own.

On the GPU host, `check` compares the carried cache's manifest with the Triton there, and
`CountingCacheManager` (TRITON_CACHE_MANAGER) logs every kernel lookup as a hit or a miss
(a miss still compiles: the JIT is not switched off) to $FUSEDRNN_TRITON_CACHE_LOG.
"""
from __future__ import annotations

import hashlib
import json
import os
import pkgutil
from pathlib import Path

MANIFEST = "fusedrnn-cache-manifest.json"
LOG_ENV = "FUSEDRNN_TRITON_CACHE_LOG"
MANAGER = "tools.device_check.triton_cache:CountingCacheManager"
DEFAULT_DIR = Path("build") / "triton_cache"


def _module_hashes(path: Path, prefix: str) -> list[str]:
    out = []
    for lib in pkgutil.walk_packages([str(path)], prefix=prefix):
        with open(lib.module_finder.find_spec(lib.name).origin, "rb") as f:
            out.append(hashlib.sha256(f.read()).hexdigest())
    return out


def host_triton_key(triton_dir: Path, version: str, libtriton_sha256: str) -> str:
    """triton_key() as Triton `version`, installed at `triton_dir` with a libtriton.so of this
    sha256, computes it (runtime/cache.py of 3.6.0, step by step)."""
    triton_dir = Path(triton_dir)
    contents = [hashlib.sha256((triton_dir / "runtime" / "cache.py").read_bytes()).hexdigest()]
    contents += _module_hashes(triton_dir / "compiler", "triton.compiler.")
    contents += _module_hashes(triton_dir / "backends", "triton.backends.")
    contents.append(libtriton_sha256)
    contents += _module_hashes(triton_dir / "language", "triton.language.")
    return f"{version}" + "-".join(contents)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def entries(cache_dir: Path) -> int:
    """Compiled kernels in a cache folder (one metadata group file each)."""
    return sum(1 for _ in Path(cache_dir).glob("*/__grp__*.json")) if Path(cache_dir).is_dir() else 0


#: what a cache hit reads (Triton's own TRITON_STORE_BINARY_ONLY keeps just these): the rest is dropped
KEPT_SUFFIXES = (".cubin", ".json")


def relocate(cache_dir: Path, prune: bool = False) -> int:
    """Point every group file's children at `cache_dir` (Triton writes absolute paths, and the
    GPU host's copy lies elsewhere: a group whose children are not found is a miss); with
    prune, drop the intermediate files a hit never reads. Returns the groups rewritten."""
    cache_dir = Path(cache_dir).resolve()
    n = 0
    for grp in cache_dir.glob("*/__grp__*.json"):
        data = json.loads(grp.read_text())
        children = {}
        for name, old in (data.get("child_paths") or {}).items():
            new = grp.parent / Path(old).name
            if prune and new.suffix not in KEPT_SUFFIXES:
                new.unlink(missing_ok=True)
                continue
            children[name] = str(new)
        if children != data.get("child_paths"):
            tmp = grp.with_name(grp.name + ".tmp")
            tmp.write_text(json.dumps({"child_paths": children}))
            os.replace(tmp, grp)
            n += 1
    return n


def check(cache_dir: Path) -> tuple[dict | None, str]:
    """(manifest, "") when the Triton here computes the key the cache was warmed for, else
    (manifest or None, why every kernel would miss). Imports triton (not the interpreter)."""
    path = Path(cache_dir) / MANIFEST
    if not path.exists():
        return None, f"no warmed Triton cache ({path} is missing): every kernel compiles on first use"
    m = json.loads(path.read_text())
    import triton  # noqa: PLC0415
    from triton.runtime.cache import triton_key  # noqa: PLC0415
    if triton.__version__ != m.get("triton"):
        return m, f"the cache was warmed for Triton {m.get('triton')}, this is {triton.__version__}: every kernel misses"
    if key_digest(triton_key()) != m.get("triton_key_sha256"):
        return m, ("the cache was warmed for another build of Triton " + str(m.get("triton")) + " (its triton_key "
                   "differs: another Python's libtriton.so?): every kernel misses")
    from triton.backends.nvidia.compiler import get_ptxas_version  # noqa: PLC0415
    if hashlib.sha256(get_ptxas_version(int(m.get("arch", 90))).encode()).hexdigest() != m.get("ptxas_sha256"):
        return m, "Triton here uses another ptxas than the warm-up did (TRITON_PTXAS_PATH?): every kernel misses"
    return m, ""


def tally(log: Path) -> dict:
    """{"hit": n, "miss": n, "launcher_hit": n, "launcher_miss": n} from a lookup log."""
    out = {"hit": 0, "miss": 0, "launcher_hit": 0, "launcher_miss": 0}
    try:
        for line in Path(log).read_text().splitlines():
            word = line.split(" ", 1)[0]
            if word in out:
                out[word] += 1
    except OSError:
        pass
    return out


def _record(word: str, name: str) -> None:
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a") as f:   # one short line per append: whole lines even from many processes
            f.write(f"{word} {name}\n")


try:
    from triton.runtime.cache import FileCacheManager as _Base
except ImportError:  # no Triton: the class is only ever named through TRITON_CACHE_MANAGER
    _Base = object


class CountingCacheManager(_Base):
    """Triton's file cache, logging each kernel lookup (a hit when the metadata group is
    there) and each launcher lookup (the per-signature C module, built for one Python)."""

    def get_group(self, filename: str):
        group = super().get_group(filename)
        if filename.endswith(".json"):
            _record("hit" if group and group.get(filename) else "miss", filename)
        return group

    def get_file(self, filename: str):
        path = super().get_file(filename)
        if filename.startswith("__triton_launcher"):
            _record("launcher_hit" if path else "launcher_miss", filename)
        return path
