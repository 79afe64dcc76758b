"""The CUDA extension's build: built and importable wherever nvcc is, skipped cleanly
where it is not, statically linked to the CUDA runtime, archs from the environment."""
import importlib
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import csrc_build  # noqa: E402

from fusedrnn.ops.common import TORCH_CELLS  # noqa: E402  (the CUDA kernels run torch.nn's four cells)

SKIPPED = os.environ.get("FUSEDRNN_SKIP_CUDA_BUILD", "").lower() in ("1", "true", "yes", "on")
needs_build = pytest.mark.skipif(csrc_build.find_nvcc() is None or SKIPPED,
                                 reason="nvcc not found or FUSEDRNN_SKIP_CUDA_BUILD set: the extension is not built")


@needs_build
def test_extension_is_built_and_imports():
    C = importlib.import_module("fusedrnn._C")
    for name in ("forward", "backward", "plan", "plan_for", "cell_step", "cell_step_plan_for", "device_limits",
                 "device_count", "saved_slots"):  # the whole list, and nothing else: tests/test_cuda_exports.py
        assert callable(getattr(C, name)), name
    assert C.DTYPE_CODES == {"float32": 0, "float16": 1, "bfloat16": 2, "int32": 3, "uint8": 4}


@needs_build
def test_extension_needs_only_the_driver():
    """Static cudart: no libcudart.so dependency, so the module imports without CUDA libraries."""
    if shutil.which("ldd") is None:
        pytest.skip("ldd not available")
    import fusedrnn._C as C
    out = subprocess.run(["ldd", C.__file__], capture_output=True, text=True, check=True).stdout
    assert "libcudart" not in out, out
    assert "libtorch" not in out and "libc10" not in out, out


@needs_build
def test_import_in_a_fresh_process_without_gpu_side_effects():
    code = "import fusedrnn._C as C; n, err = C.device_count(); print(n, bool(err))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr


def test_every_cell_has_an_instantiation_file():
    cu, cpp = csrc_build.sources()
    names = {os.path.basename(p) for p in cu}
    for cell in TORCH_CELLS:
        assert f"{cell}.cu" in names, f"csrc/kernels/{cell}.cu missing"
    assert {"binding.cpp", "validate.cpp", "plan.cpp"} <= {os.path.basename(p) for p in cpp}
    for header in ("lstm.cuh", "gru.cuh", "rnn.cuh"):
        assert os.path.isfile(os.path.join(ROOT, "csrc", "cells", header))


def test_no_torch_headers_in_csrc():
    for dirpath, _, files in os.walk(os.path.join(ROOT, "csrc")):
        for f in files:
            text = open(os.path.join(dirpath, f)).read()
            assert "torch/" not in text and "ATen" not in text and "c10/" not in text, f


@pytest.mark.parametrize("spec, expected", [
    ("80;90", ["80", "90"]), ("8.0 9.0", ["80", "90"]), ("80,90a", ["80", "90a"]),
    ("sm_90", ["90"]), ("90;90", ["90"]), ("100f", ["100f"]), ("90-virtual", ["90-virtual"]),
    ("80;9.0-virtual", ["80", "90-virtual"]),
])
def test_arch_parsing(spec, expected):
    assert csrc_build.cuda_archs(spec) == expected


@pytest.mark.parametrize("spec", ["", "75", "ninety", "8.x"])
def test_arch_parsing_rejects(spec):
    with pytest.raises(ValueError):
        csrc_build.cuda_archs(spec)


def test_default_archs_cover_sm80_and_sm90(monkeypatch):
    monkeypatch.delenv("FUSEDRNN_CUDA_ARCHS", raising=False)
    flags = csrc_build.gencode_flags(csrc_build.cuda_archs())
    assert "arch=compute_80,code=sm_80" in flags and "arch=compute_90,code=sm_90" in flags
    assert "arch=compute_90,code=compute_90" in flags  # PTX for newer GPUs


def test_a_virtual_architecture_is_ptx_without_machine_code():
    """What scripts/setup_env.sh builds without a GPU: sm_90's PTX, no ptxas run, no sm_90 code."""
    assert csrc_build.gencode_flags(["90-virtual"]) == ["-gencode", "arch=compute_90,code=compute_90"]
    assert csrc_build.gencode_flags(["80", "90-virtual"]) == ["-gencode", "arch=compute_80,code=sm_80",
                                                              "-gencode", "arch=compute_90,code=compute_90"]


def test_unoptimised_ptx_only_where_no_machine_code_is_built(monkeypatch):
    """FUSEDRNN_UNOPTIMISED_PTX=1 (setup_env.sh without a GPU): cicc at -O0 for a PTX-only
    build; asked of a build with machine code it refuses (ptxas would make slow kernels of it)."""
    monkeypatch.delenv("FUSEDRNN_UNOPTIMISED_PTX", raising=False)
    assert "-Xcicc" not in csrc_build.nvcc_flags(["90-virtual"])
    monkeypatch.setenv("FUSEDRNN_UNOPTIMISED_PTX", "1")
    flags = csrc_build.nvcc_flags(["90-virtual"])
    assert flags[flags.index("-Xcicc") + 1] == "-O0"
    with pytest.raises(ValueError, match="PTX-only builds.*machine code for 90"):
        csrc_build.nvcc_flags(["90"])
    with pytest.raises(ValueError, match="machine code for 80"):
        csrc_build.nvcc_flags(["80", "90-virtual"])


def test_skip_env_var_skips_the_build(monkeypatch, capsys):
    monkeypatch.setenv("FUSEDRNN_SKIP_CUDA_BUILD", "1")
    assert csrc_build.cuda_extensions() == []
    assert "FUSEDRNN_SKIP_CUDA_BUILD" in capsys.readouterr().err


def test_no_nvcc_skips_the_build(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("FUSEDRNN_SKIP_CUDA_BUILD", raising=False)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert csrc_build.find_nvcc() is None
    assert csrc_build.cuda_extensions() == []
    assert "nvcc was not found" in capsys.readouterr().err


@needs_build
def test_compile_commands(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSEDRNN_CUDA_ARCHS", "90")
    monkeypatch.delenv("FUSEDRNN_UNOPTIMISED_PTX", raising=False)  # machine code: optimised
    jobs, link = csrc_build._commands(str(tmp_path / "_C.so"), str(tmp_path))
    nv = [cmd for src, _, cmd in jobs if src.endswith(".cu")]
    assert nv and all("-O3" in c and "-std=c++17" in c and "arch=compute_90,code=sm_90" in c for c in nv)
    assert not any("--use_fast_math" in c for c in nv)
    assert "--cudart=static" in link
