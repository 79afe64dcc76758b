"""The suite as an installed user gets it: the wheel installs benchmarks/ as the package
`fusedrnn_bench` (console script fusedrnn-bench = fusedrnn_bench.run:main). So every
import inside it is relative, nothing assumes the repository's layout, results go to the
working directory (or --out), matplotlib is optional, and the help cites no file outside
the repository."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUITE = REPO / "benchmarks"

# runs a module of the suite under its installed name, with matplotlib made unimportable,
# then fails if anything imported the repository's `benchmarks` package instead
DRIVER = """
import runpy, sys
code = 0
module = sys.argv.pop(1)
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code or 0
leaked = sorted(m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks."))
if leaked:
    print("LEAKED", leaked)
    code = 97
if "matplotlib" in sys.modules and sys.modules["matplotlib"] is not None:
    print("MATPLOTLIB IMPORTED")
    code = 98
sys.exit(code)
"""


def _modules():
    return sorted(p for p in SUITE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_of_the_suite_imports_itself_by_its_repository_name():
    bad = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "benchmarks":
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "benchmarks" for a in node.names):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not bad, "absolute imports of `benchmarks` (the wheel names it fusedrnn_bench): " + ", ".join(bad)


def test_no_module_spells_a_repository_path_or_an_outside_document():
    for path in _modules():
        text = path.read_text()
        assert "ANCHORS.md" not in text and "DESIGN.md" not in text, path
        assert "parent.parent" not in text, f"{path}: a path that assumes the repository layout"


@pytest.fixture
def installed(tmp_path):
    """A site folder where the suite is importable only as fusedrnn_bench, and matplotlib is not at all."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "fusedrnn_bench").symlink_to(SUITE, target_is_directory=True)
    (site / "matplotlib").mkdir()
    (site / "matplotlib" / "__init__.py").write_text("raise ImportError('matplotlib is not installed here')\n")
    (tmp_path / "driver.py").write_text(DRIVER)
    empty = tmp_path / "cwd"
    empty.mkdir()

    def run(*args, timeout=300):
        env = dict(os.environ, PYTHONPATH=str(site), TRITON_INTERPRET="1")
        return subprocess.run([sys.executable, str(tmp_path / "driver.py"), *args], cwd=empty, env=env,
                              capture_output=True, text=True, timeout=timeout)
    return run, empty


def test_help_under_the_installed_name_cites_nothing_outside(installed):
    run, _ = installed
    proc = run("fusedrnn_bench.run", "--help")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("usage: python -m fusedrnn_bench.run")
    flat = " ".join(proc.stdout.split())
    assert "the anchor shapes (docs/anchors.md)" in flat
    assert ".md" not in flat.replace("docs/anchors.md", "")


def test_a_small_cpu_run_from_an_empty_folder_without_matplotlib(installed):
    run, cwd = installed
    before = sorted(p.name for p in SUITE.iterdir())
    proc = run("fusedrnn_bench.run", "--shapes", "2,3,4", "--cells", "lstm", "--cases", "layer", "--providers",
               "torch-cpu,fusedrnn-reference", "--reps", "2", "--warmup", "0", "--progress", "none")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no plot: CPU timings are not representative" in proc.stdout
    folders = list((cwd / "fusedrnn-bench").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("-cpu")
    data = json.loads((folders[0] / "results.json").read_text())
    assert {r["provider"] for r in data["rows"]} == {"torch-cpu", "fusedrnn-reference"}
    assert sorted(p.name for p in SUITE.iterdir()) == before          # nothing written into the package
