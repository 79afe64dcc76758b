"""The CUDA kernels built ahead (tools/device_check/prebuilt.py): a missing or stale
artifact is refused with its reason, never used (small fakes stand for the libraries);
the ELF reader that proves an object needs no Python; and, when build/prebuilt holds a
current artifact, that it needs no Python and loads from another interpreter through ctypes."""
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.device_check import elf_deps, prebuilt

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import csrc_build  # noqa: E402


def _fake_library(dest: Path) -> None:
    """Any ELF shared object without Python stands for a built library (libm: always there)."""
    libm = next(p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                            "/lib64/libm.so.6") if os.path.exists(p))
    shutil.copyfile(libm, dest)


@pytest.fixture
def fake(tmp_path):
    """A tree with csrc/, csrc_build.py and the calibration source, and a manifest that matches it."""
    repo = tmp_path / "repo"
    (repo / "csrc" / "kernels").mkdir(parents=True)
    (repo / "csrc" / "kernels" / "lstm.cu").write_text("// kernels\n")
    (repo / "csrc_build.py").write_text("# builder\n")
    (repo / prebuilt.CALIBRATE_SOURCE).parent.mkdir(parents=True)
    (repo / prebuilt.CALIBRATE_SOURCE).write_text("// calibration\n")
    where = repo / prebuilt.DEFAULT_DIR
    where.mkdir(parents=True)
    _fake_library(where / csrc_build.KERNEL_LIBRARY)
    _fake_library(where / prebuilt.CALIBRATE_LIBRARY)
    manifest = {"schema": prebuilt.SCHEMA, "source_hash": prebuilt.source_hash(repo), "archs": ["90"],
                "commit": "a" * 40, "library": csrc_build.KERNEL_LIBRARY,
                "library_sha256": prebuilt.file_sha256(where / csrc_build.KERNEL_LIBRARY),
                "calibrate_library": prebuilt.CALIBRATE_LIBRARY,
                "calibrate_sha256": prebuilt.file_sha256(where / prebuilt.CALIBRATE_LIBRARY)}
    (where / prebuilt.MANIFEST).write_text(json.dumps(manifest))
    return repo, where


def test_a_current_artifact_is_accepted_for_its_arch(fake):
    repo, _ = fake
    m, why = prebuilt.check(repo, arch="90")
    assert why == "" and m["archs"] == ["90"]


def test_a_missing_or_unreadable_manifest_is_refused(fake):
    repo, where = fake
    (where / prebuilt.MANIFEST).write_text("{not json")
    assert "unreadable" in prebuilt.check(repo)[1]
    (where / prebuilt.MANIFEST).unlink()
    m, why = prebuilt.check(repo)
    assert m is None and "no prebuilt CUDA artifact" in why and "prebuilt build" in why


def test_changed_sources_make_it_stale_but_another_commit_alone_does_not(fake):
    repo, where = fake
    manifest = json.loads((where / prebuilt.MANIFEST).read_text())
    manifest["commit"] = "b" * 40            # a commit that touched neither csrc/ nor the builder
    (where / prebuilt.MANIFEST).write_text(json.dumps(manifest))
    assert prebuilt.check(repo)[1] == ""
    for edit in (repo / "csrc" / "kernels" / "lstm.cu", repo / "csrc_build.py", repo / prebuilt.CALIBRATE_SOURCE):
        old = edit.read_text()
        edit.write_text(old + "// changed\n")
        why = prebuilt.check(repo)[1]
        assert why.startswith("stale prebuilt CUDA artifact") and "rebuild it here" in why, edit
        edit.write_text(old)
    (repo / "csrc" / "new.cu").write_text("// a new file\n")
    assert prebuilt.check(repo)[1].startswith("stale")


def test_another_arch_a_swapped_or_missing_library_and_a_python_tie_are_refused(fake, monkeypatch):
    repo, where = fake
    assert "not this GPU's sm_100" in prebuilt.check(repo, arch="100")[1]
    lib = where / csrc_build.KERNEL_LIBRARY
    original = lib.read_bytes()
    lib.write_bytes(original + b"\0")
    assert "sha256 differs" in prebuilt.check(repo)[1]
    lib.write_bytes(original)
    (where / prebuilt.CALIBRATE_LIBRARY).unlink()
    assert "is missing" in prebuilt.check(repo)[1]
    _fake_library(where / prebuilt.CALIBRATE_LIBRARY)
    assert prebuilt.check(repo)[1] == ""
    monkeypatch.setattr(prebuilt, "python_dependencies", lambda path: ["PyTuple_New"])
    assert "tie the artifact to one Python" in prebuilt.check(repo)[1]


def test_load_refuses_a_stale_artifact_before_compiling_anything(fake, monkeypatch):
    repo, _ = fake
    (repo / "csrc" / "kernels" / "lstm.cu").write_text("// changed\n")
    monkeypatch.setattr(prebuilt, "_csrc_build", lambda: pytest.fail("load compiled a refused artifact"))
    with pytest.raises(prebuilt.Refused, match="stale"):
        prebuilt.load(repo)


def test_the_cli_exits_3_when_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tools.device_check.prebuilt", "check", "--dir",
                           str(tmp_path / "none")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == prebuilt.REFUSED and "prebuilt: REFUSED: no prebuilt CUDA artifact" in proc.stdout


def test_the_library_holds_everything_but_the_pybind11_binding():
    lib, binding = csrc_build.library_sources(), csrc_build.binding_sources()
    cu, cpp = csrc_build.sources()
    assert sorted(lib + binding) == sorted(cu + cpp) and not set(lib) & set(binding)
    for path in lib:   # nothing in the library may include Python, directly or through a header
        text = Path(path).read_text()
        assert "pybind11" not in text and "validate.h" not in text, path
    assert {os.path.basename(p) for p in binding} == set(csrc_build.BINDING_SOURCES)
    # the C++ self-tests are the test module's (tools/cuda_selftest), in neither the library nor the binding
    assert not [p for p in lib + binding if "selftest" in p or "host_cells" in p or "/tools/" in p]


def test_the_elf_reader_sees_a_python_extensions_tie_and_a_plain_librarys_freedom(tmp_path):
    import numpy
    ext = glob.glob(os.path.join(os.path.dirname(numpy.__file__), "_core", "_multiarray_umath*.so")) + \
        glob.glob(os.path.join(os.path.dirname(numpy.__file__), "core", "_multiarray_umath*.so"))
    tied = elf_deps.python_dependencies(ext[0])
    assert any(s.startswith("Py") for s in tied)
    _fake_library(tmp_path / "plain.so")
    assert "libc.so.6" in elf_deps.needed_libraries(tmp_path / "plain.so")
    assert elf_deps.python_dependencies(tmp_path / "plain.so") == []
    (tmp_path / "text").write_text("not elf")
    with pytest.raises(ValueError, match="not a 64-bit"):
        elf_deps.needed_libraries(tmp_path / "text")


def _current_artifact():
    m, why = prebuilt.check(REPO)
    return (m, REPO / prebuilt.DEFAULT_DIR) if not why else (None, why)


def test_the_built_artifact_needs_no_python_and_loads_from_another_interpreter():
    m, where = _current_artifact()
    if m is None:
        pytest.skip(f"no current artifact here ({where}); build it: python -m tools.device_check.prebuilt build")
    for name in (m["library"], m["calibrate_library"]):
        assert elf_deps.python_dependencies(where / name) == [], name
        assert not [n for n in elf_deps.needed_libraries(where / name) if "cudart" in n], name   # static runtime
    other = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)
                  and os.path.realpath(p) != os.path.realpath(sys.executable)), None)
    if other is None:
        pytest.skip("no second Python interpreter here")
    code = ("import ctypes, json, sys; f = ctypes.CDLL(sys.argv[1]).fusedrnn_build_info; f.restype = ctypes.c_char_p; "
            "print(json.dumps(json.loads(f())))")
    out = subprocess.run([other, "-I", "-c", code, str(where / m["library"])], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["source_hash"] == m["source_hash"] and info["archs"] == m["archs"]


def test_the_real_kernels_host_stub_is_found_and_its_address_computed():
    """The persistent kernels are `static`: their host stubs (the CUDA runtime's handles) are
    found in the full symbol table, and an exported symbol gives the load base: the base so
    computed must be where the loaded library's ELF header lies."""
    import ctypes
    m, where = _current_artifact()
    if m is None:
        pytest.skip(f"no current artifact here ({where}); build it: python -m tools.device_check.prebuilt build")
    stubs = prebuilt.persistent_kernels(where / m["library"])
    assert stubs == m["persistent_kernels"]
    fwd = [d for d in stubs if "persistent_kernel<fusedrnn::FwdPass<fusedrnn::LstmCell, __nv_bfloat16> >" in d]
    assert len(fwd) == 1 and prebuilt.BASE_SYMBOL in stubs
    lib = ctypes.CDLL(str(where / m["library"]))
    base = ctypes.cast(getattr(lib, prebuilt.BASE_SYMBOL), ctypes.c_void_p).value - stubs[prebuilt.BASE_SYMBOL]
    assert ctypes.string_at(base, 4) == b"\x7fELF"
    assert 0 < stubs[fwd[0]] < (where / m["library"]).stat().st_size


def test_the_real_tree_hashes_and_every_source_the_build_names_exists():
    # the fakes above build their own tree; this reads the repository's (a path left behind
    # by a move once made `prebuilt build` fail before it compiled anything)
    assert (REPO / prebuilt.CALIBRATE_SOURCE).is_file(), prebuilt.CALIBRATE_SOURCE
    assert len(prebuilt.source_hash(REPO)) == 64
