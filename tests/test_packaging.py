"""What `pip install <checkout>` produces, checked on copies of the source tree.

Building the real extension takes minutes, and the test command's set-up already builds it
through setup.py (`pip install -e .`, then `setup.py build_ext --inplace`). Here the wheel
with the extension is built with the compile step replaced by a copy of a stand-in file:
what is checked is the wiring (the wheel's tag, where the module lands), not the compiler.
Each build below takes a second or two."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from email.parser import Parser
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from csrc_build import find_nvcc  # noqa: E402
EXT_FILE = "fusedrnn/_C" + sysconfig.get_config_var("EXT_SUFFIX")
TABLE = "fusedrnn/tuning/a-card.json"
IGNORED = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                 ".hypothesis", ".benchmarks", "results", "*.so", ".whl", "device_check_out")


def copy_tree(dest):
    shutil.copytree(ROOT, dest, ignore=IGNORED)
    return dest


def build(cmd, cwd, **env):
    """Run a build command in `cwd` with the build variables cleared, then `env` set."""
    full = {k: v for k, v in os.environ.items() if k not in ("FUSEDRNN_SKIP_CUDA_BUILD", "FUSEDRNN_CUDA_ARCHS")}
    full.update(env)
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=300)


def pip_wheel(src, out, **env):
    r = build([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
               "-w", str(out), "."], src, **env)
    wheels = list(out.glob("*.whl")) if out.is_dir() else []
    return r, wheels


def path_without_nvcc():
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not os.path.exists(os.path.join(d, "nvcc")))


def top_levels(names):
    return {n.split("/")[0] for n in names}


@pytest.fixture(scope="module")
def pure_wheel(tmp_path_factory):
    """The wheel built with FUSEDRNN_SKIP_CUDA_BUILD=1 from a tree holding a stale in-place
    build of the extension (it must not be packed into a pure wheel)."""
    src = copy_tree(tmp_path_factory.mktemp("pure") / "src")
    with open(os.path.join(src, EXT_FILE), "wb") as f:
        f.write(b"stale in-place build")
    with open(os.path.join(src, TABLE), "w") as f:  # a dispatch table, as benchmarks.record writes them
        f.write('{"format": 1, "card": "a card", "entries": []}\n')
    r, wheels = pip_wheel(src, src / "dist", FUSEDRNN_SKIP_CUDA_BUILD="1")
    assert r.returncode == 0 and len(wheels) == 1, r.stdout + r.stderr
    return SimpleNamespace(path=wheels[0], output=r.stdout + r.stderr)


def test_skip_flag_gives_a_pure_wheel_without_the_extension(pure_wheel):
    assert pure_wheel.path.name == "fusedrnn-0.1.0-py3-none-any.whl"
    names = zipfile.ZipFile(pure_wheel.path).namelist()
    assert not [n for n in names if n.endswith((".so", ".pyd"))], names


def test_skip_flag_is_said_in_pips_normal_output(pure_wheel):
    forwards = "import pip._vendor.pyproject_hooks as h; print(hasattr(h, 'BuildBackendWarning'))"
    if subprocess.run([sys.executable, "-c", forwards], capture_output=True, text=True).stdout.strip() != "True":
        pytest.skip("this pip does not forward a build's warnings (pip -v shows the message)")
    assert "building without the CUDA extension fusedrnn._C (FUSEDRNN_SKIP_CUDA_BUILD is set)" in pure_wheel.output


def test_wheel_installs_no_generic_top_level_package(pure_wheel):
    zf = zipfile.ZipFile(pure_wheel.path)
    names = zf.namelist()
    assert top_levels(names) == {"fusedrnn", "fusedrnn_bench", "fusedrnn-0.1.0.dist-info"}
    # every module of benchmarks/ (subpackages too) is there, under fusedrnn_bench
    bench = {os.path.relpath(os.path.join(d, f), os.path.join(ROOT, "benchmarks")).replace(os.sep, "/")
             for d, _, files in os.walk(os.path.join(ROOT, "benchmarks")) for f in files if f.endswith(".py")}
    assert bench and {"fusedrnn_bench/" + b for b in bench} <= set(names)
    assert "fusedrnn_bench/run.py" in names and "fusedrnn/nn.py" in names
    assert TABLE in names and "fusedrnn/tuning/__init__.py" in names  # the dispatch tables ship as package data
    entry_points = zf.read("fusedrnn-0.1.0.dist-info/entry_points.txt").decode()
    assert "fusedrnn-bench = fusedrnn_bench.run:main" in entry_points


#: what marks a file as developer tooling (tools/): the device check, the compile gate, the CUDA
#: emulator, the C++ self-tests (host cells, the fake runtime) and their host builder
TOOLING = re.compile(r"device_check|compile_check|cuda_emu|/emu\.|selftest|host_cells|host_build|calibrate|"
                     r"(^|/)tools/")


def test_wheel_carries_no_developer_tooling(pure_wheel):
    """The device check, the compile gate, the CUDA emulator and the C++ self-tests live in tools/
    and stay there: a user's install holds the package and the benchmark suite only."""
    names = zipfile.ZipFile(pure_wheel.path).namelist()
    tooling = [n for n in names if TOOLING.search(n)]
    assert not tooling, tooling


def test_wheel_declares_runtime_dependencies(pure_wheel):
    meta = Parser().parsestr(zipfile.ZipFile(pure_wheel.path).read("fusedrnn-0.1.0.dist-info/METADATA").decode())
    requires = [r.replace(" ", "") for r in meta.get_all("Requires-Dist")]
    assert "torch>=2.10" in requires
    assert "numpy" in requires  # Triton's CPU interpreter needs it
    triton = [Requirement(r) for r in requires if r.startswith("triton")]
    assert len(triton) == 1 and "platform_system" in str(triton[0].marker), requires
    # the tested range, 3.6.0 (torch 2.10/2.11's pin) to 3.9.0, admits torch 2.13's pin 3.7.1
    assert [v for v in ("3.5.1", "3.6.0", "3.7.1", "3.8.0", "3.9.0", "3.10.0")
            if triton[0].specifier.contains(v)] == ["3.6.0", "3.7.1", "3.8.0", "3.9.0"], triton


def test_without_nvcc_the_build_stops_and_explains(tmp_path):
    src = copy_tree(tmp_path / "src")
    r, wheels = pip_wheel(src, tmp_path / "dist", PATH=path_without_nvcc(), CUDA_HOME="", CUDA_PATH="")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and not wheels, out
    assert "cannot build the CUDA extension fusedrnn._C: nvcc was not found" in out, out
    assert "FUSEDRNN_SKIP_CUDA_BUILD=1 pip install ." in out, out


def test_with_nvcc_the_wheel_is_platform_specific_and_holds_the_extension(tmp_path):
    if find_nvcc() is None:
        pytest.skip("no nvcc here: the build stops (test_without_nvcc_the_build_stops_and_explains)")
    src = copy_tree(tmp_path / "src")
    # the stand-in for the compile: the real one is built by the test command's set-up
    stand_in = tmp_path / "stand_in.so"
    stand_in.write_bytes(b"stand-in for the compiled extension")
    with open(os.path.join(src, "csrc_build.py"), "a") as f:
        f.write(f"\n\ndef build_cuda_extension(out, build_dir, jobs_n=None):\n"
                f"    shutil.copyfile({str(stand_in)!r}, out)\n")
    r, wheels = pip_wheel(src, tmp_path / "dist")
    assert r.returncode == 0 and len(wheels) == 1, r.stdout + r.stderr
    tag = wheels[0].name.split("-", 2)[2]
    assert not tag.endswith("-none-any.whl"), tag
    assert sysconfig.get_platform().replace("-", "_").replace(".", "_") in tag, tag
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert EXT_FILE in names, names
    assert top_levels(names) == {"fusedrnn", "fusedrnn_bench", "fusedrnn-0.1.0.dist-info"}


def test_sdist_builds_a_wheel_without_the_checkout(tmp_path):
    """The source distribution carries the extension's sources and builder (MANIFEST.in) and no
    developer tooling; making it needs no compiler."""
    src = copy_tree(tmp_path / "src")
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    r = build([sys.executable, "-c", code, str(tmp_path / "sdist")], src, PATH=path_without_nvcc())
    assert r.returncode == 0, r.stdout + r.stderr
    sdist = tmp_path / "sdist" / r.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        for needed in ("pyproject.toml", "setup.py", "csrc_build.py", "csrc/binding.cpp",
                       "csrc/kernels/lstm.cu", "csrc/cells/lstm.cuh", "benchmarks/run.py", "docs/anchors.md"):
            assert needed in names, needed
        csrc = {os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/")
                for d, _, files in os.walk(os.path.join(ROOT, "csrc")) for f in files}
        assert csrc <= names, sorted(csrc - names)  # every source and header the build may include
        # no tooling (tools/: the self-tests' module, the emulator, ...); the tests of the product may ship
        tooling = [n for n in names if TOOLING.search(n) and not n.startswith("tests/")]
        assert not tooling, tooling
        tar.extractall(tmp_path / "unpacked", filter="data")
    unpacked = next((tmp_path / "unpacked").iterdir())
    r, wheels = pip_wheel(unpacked, tmp_path / "dist", FUSEDRNN_SKIP_CUDA_BUILD="1")
    assert r.returncode == 0 and len(wheels) == 1, r.stdout + r.stderr
