"""The Triton cache warmed here for the GPU host (tools/device_check/warm_cache.py,
triton_cache.py): the key is rebuilt exactly as the installed Triton computes it, the
host's wheel is read for its libtriton.so, the carried cache is checked against the Triton
that would use it, and every kernel lookup is counted as a hit or a miss. No compile here:
scripts/triton_compat.sh runs this file under Triton 3.6.0 (the GPU host's) too."""
import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import triton
from triton.runtime.cache import triton_key

from tools.device_check import triton_cache, warm_cache

INSTALLED = Path(triton.__file__).parent


def test_the_host_key_is_triton_key_rebuilt_step_by_step():
    lib = hashlib.sha256((INSTALLED / "_C" / "libtriton.so").read_bytes()).hexdigest()
    assert triton_cache.host_triton_key(INSTALLED, triton.__version__, lib) == triton_key()
    other = triton_cache.host_triton_key(INSTALLED, triton.__version__, "0" * 64)
    assert other != triton_key()     # another Python's libtriton.so: another key, every kernel would miss


def _wheel(path: Path, lib: bytes, edit: bool) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("triton/_C/libtriton.so", lib)
        source = (INSTALLED / "language" / "core.py").read_bytes()
        z.writestr("triton/language/core.py", source + (b"# edited\n" if edit else b""))
        z.writestr("triton-x.dist-info/METADATA", "Name: triton\n")
    return path


def test_the_wheel_gives_its_libtriton_hash_and_must_match_the_python_files_here(tmp_path):
    sha, differ = warm_cache.wheel_facts(_wheel(tmp_path / "a.whl", b"lib312", edit=False), INSTALLED)
    assert sha == hashlib.sha256(b"lib312").hexdigest() and differ == []
    _, differ = warm_cache.wheel_facts(_wheel(tmp_path / "b.whl", b"lib312", edit=True), INSTALLED)
    assert differ == ["triton/language/core.py"]


def test_use_host_key_replaces_the_key_only_when_given(monkeypatch):
    import triton.runtime.cache as cache
    monkeypatch.setattr(cache, "triton_key", cache.triton_key)   # restored after the test
    monkeypatch.delenv(warm_cache.HOST_KEY_ENV, raising=False)
    warm_cache.use_host_key()
    assert cache.triton_key() == triton_key()
    monkeypatch.setenv(warm_cache.HOST_KEY_ENV, "3.6.0-host")
    warm_cache.use_host_key()
    assert cache.triton_key() == "3.6.0-host"


def test_check_compares_version_key_and_ptxas(tmp_path):
    m, why = triton_cache.check(tmp_path)
    assert m is None and "no warmed Triton cache" in why
    from triton.backends.nvidia.compiler import get_ptxas_version
    good = {"triton": triton.__version__, "triton_key_sha256": triton_cache.key_digest(triton_key()), "arch": 90,
            "ptxas_sha256": hashlib.sha256(get_ptxas_version(90).encode()).hexdigest()}
    for change, expect in (({}, ""), ({"triton": "0.0.1"}, "warmed for Triton 0.0.1"),
                           ({"triton_key_sha256": "0" * 64}, "another build of Triton"),
                           ({"ptxas_sha256": "0" * 64}, "another ptxas")):
        (tmp_path / triton_cache.MANIFEST).write_text(json.dumps(dict(good, **change)))
        why = triton_cache.check(tmp_path)[1]
        assert (why == "") if not expect else (expect in why), (change, why)


def test_the_counting_manager_logs_hits_and_misses(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    log = tmp_path / "lookups.log"
    monkeypatch.setenv(triton_cache.LOG_ENV, str(log))
    m = triton_cache.CountingCacheManager("k" * 20)
    assert not m.get_group("kern.json")                                    # a miss: compile
    path = m.put(b"{}", "kern.json")
    m.put_group("kern.json", {"kern.json": path})
    assert m.get_group("kern.json")                                        # a hit
    assert m.get_file("__triton_launcher.cpython-311-x86_64-linux-gnu.so") is None
    assert triton_cache.tally(log) == {"hit": 1, "miss": 1, "launcher_hit": 0, "launcher_miss": 1}
    assert triton_cache.entries(tmp_path / "cache") == 1


def test_warm_refuses_another_triton_or_the_interpreter(tmp_path, monkeypatch):
    if triton.__version__ == warm_cache.TARGET_TRITON:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        with pytest.raises(SystemExit, match="unset TRITON_INTERPRET"):
            warm_cache.warm(tmp_path, tmp_path / "w.whl", "anchors", ["lstm"], ["fp32"], 1)
    else:
        with pytest.raises(SystemExit, match=f"the GPU host runs {warm_cache.TARGET_TRITON}"):
            warm_cache.warm(tmp_path, tmp_path / "w.whl", "anchors", ["lstm"], ["fp32"], 1)


def test_relocate_points_the_groups_at_the_copy_and_prune_keeps_what_a_hit_reads(tmp_path, monkeypatch):
    """Triton writes absolute paths into its group files: a copy elsewhere (the GPU host's)
    finds no child and misses, until relocate rewrites them."""
    warm = tmp_path / "here" / "cache"
    monkeypatch.setenv("TRITON_CACHE_DIR", str(warm))
    m = triton_cache.CountingCacheManager("k" * 20)
    group = {n: m.put(b"x", n) for n in ("kern.json", "kern.cubin", "kern.ptx")}
    m.put_group("kern.json", group)
    copy = tmp_path / "gpu-host" / "cache"
    copy.parent.mkdir()
    warm.rename(copy)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(copy))
    there = triton_cache.CountingCacheManager("k" * 20)
    assert not there.get_group("kern.json")                     # Triton's paths point at the old place
    assert triton_cache.relocate(copy, prune=True) == 1
    assert set(there.get_group("kern.json")) == {"kern.json", "kern.cubin"}    # a hit, the .ptx dropped
    assert not (copy / ("k" * 20) / "kern.ptx").exists() and triton_cache.relocate(copy) == 0


COMPILE_ONE = """
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

@triton.jit
def add_one(x_ptr, n, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(x_ptr + i, tl.load(x_ptr + i, mask=i < n) + 1, mask=i < n)

triton.compile(ASTSource(add_one, {"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}, {"BLOCK": 32}),
               target=GPUTarget("cuda", 90, 32))
"""


def test_a_real_compile_through_the_counting_manager_misses_then_hits(tmp_path):
    """Triton resolves TRITON_CACHE_MANAGER itself (as the GPU host's test processes will):
    the first compile of a kernel is a logged miss, the same compile in a new process a hit."""
    import os
    import subprocess
    import sys
    repo = Path(__file__).resolve().parents[2]
    log = tmp_path / "lookups.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRITON_")}
    env.update(TRITON_CACHE_DIR=str(tmp_path / "cache"), TRITON_CACHE_MANAGER=triton_cache.MANAGER,
               PYTHONPATH=os.pathsep.join([str(repo)] + sys.path), **{triton_cache.LOG_ENV: str(log)})
    script = tmp_path / "compile_one.py"    # @triton.jit reads its source from a file
    script.write_text(COMPILE_ONE)
    for expected in ({"hit": 0, "miss": 1}, {"hit": 1, "miss": 1}):
        r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        t = triton_cache.tally(log)
        assert {"hit": t["hit"], "miss": t["miss"]} == expected
    assert triton_cache.entries(tmp_path / "cache") == 1
