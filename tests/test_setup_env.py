"""scripts/setup_env.sh (sourced by the README's two commands) rebuilds the CUDA extension
only when what it is built from changed: csrc/, csrc_build.py, FUSEDRNN_CUDA_ARCHS.

Run on a copy of those files with a stand-in virtual environment whose `python` records
`setup.py ...` calls instead of compiling (everything else goes to the real interpreter)."""
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXT_FILE = "_C" + sysconfig.get_config_var("EXT_SUFFIX")


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "fusedrnn").mkdir()
    for f in ("scripts/setup_env.sh", "csrc_build.py", "setup.py", "pyproject.toml", "requirements-dev.txt"):
        shutil.copyfile(os.path.join(ROOT, f), root / f)
    shutil.copytree(os.path.join(ROOT, "csrc"), root / "csrc")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{venv}/bin:$PATH"\n')
    log = tmp_path / "builds.log"
    python = venv / "bin" / "python"
    python.write_text("#!/usr/bin/env bash\n"
                      f'if [ "$1" = setup.py ]; then echo "$*" >> "{log}"; touch "{root}/fusedrnn/{EXT_FILE}"; exit 0; fi\n'
                      f'exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    # the stamp of an up-to-date install, as the first run of setup_env.sh writes it
    want = subprocess.run("cat requirements-dev.txt setup.py pyproject.toml | sha1sum | cut -d' ' -f1",
                          shell=True, cwd=root, capture_output=True, text=True, check=True).stdout
    (venv / ".fusedrnn-installed").write_text(want)
    return root, venv, log


def run_setup_env(tree, **env):
    root, venv, log = tree
    full = {k: v for k, v in os.environ.items() if not k.startswith("FUSEDRNN_")}
    full.update(FUSEDRNN_VENV=str(venv), **env)
    r = subprocess.run(["bash", "-c", ". scripts/setup_env.sh"], cwd=root, env=full, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    builds = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return builds, r.stderr


def test_extension_is_rebuilt_only_when_its_sources_change(tree):
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc: setup_env.sh never builds the extension here")
    root = tree[0]
    builds, said = run_setup_env(tree)  # no build recorded yet
    assert builds == ["setup.py -q build_ext --inplace"] and "rebuilding fusedrnn._C" in said
    assert run_setup_env(tree)[0] == []  # nothing changed: no compile
    assert run_setup_env(tree)[0] == []
    with open(root / "csrc" / "binding.cpp", "a") as f:
        f.write("\n// changed\n")
    assert len(run_setup_env(tree)[0]) == 1
    assert run_setup_env(tree)[0] == []
    assert len(run_setup_env(tree, FUSEDRNN_CUDA_ARCHS="80")[0]) == 1  # other architectures
    assert run_setup_env(tree, FUSEDRNN_CUDA_ARCHS="80")[0] == []
    (root / "fusedrnn" / EXT_FILE).unlink()  # the module itself is gone
    assert len(run_setup_env(tree, FUSEDRNN_CUDA_ARCHS="80")[0]) == 1


def fake_nvidia_smi(tree, works: bool):
    """An nvidia-smi ahead on PATH that finds a GPU or fails as on a machine without one."""
    smi = tree[1] / "bin" / "nvidia-smi"
    smi.write_text("#!/usr/bin/env bash\n" + ("echo 'GPU 0: NVIDIA H100'\n" if works else "exit 9\n"))
    smi.chmod(0o755)


def test_without_a_gpu_it_is_sm90_ptx_for_the_tests_and_sm90_code_for_the_gates(tree):
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc: setup_env.sh never builds the extension here")
    fake_nvidia_smi(tree, works=False)
    builds, said = run_setup_env(tree)
    assert builds and "as unoptimised sm_90 PTX only: no NVIDIA GPU here" in said
    # what it built: sm_90's PTX, unoptimised (the same arch optimised is another build)
    assert run_setup_env(tree, FUSEDRNN_CUDA_ARCHS="90-virtual", FUSEDRNN_UNOPTIMISED_PTX="1")[0] == []
    assert len(run_setup_env(tree, FUSEDRNN_CUDA_ARCHS="90-virtual")[0]) == 1
    # the compile gates read sm_90 machine code (`test.sh --gates`): built once, then kept by both
    builds, said = run_setup_env(tree, FUSEDRNN_NEEDS_SASS="1")
    assert len(builds) == 1 and "for sm_90 only" in said
    assert run_setup_env(tree, FUSEDRNN_CUDA_ARCHS="90")[0] == []  # what it built: sm_90
    assert run_setup_env(tree)[0] == [] and run_setup_env(tree, FUSEDRNN_NEEDS_SASS="1")[0] == []
    fake_nvidia_smi(tree, works=True)
    builds, said = run_setup_env(tree)  # a GPU: the default architectures, built again
    assert len(builds) == 1 and "sm_90 only" not in said


def test_skip_flag_never_builds(tree):
    assert run_setup_env(tree, FUSEDRNN_SKIP_CUDA_BUILD="1")[0] == []
