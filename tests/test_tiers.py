"""The two tiers (tests/support/tiers.py): the default run leaves the tests marked `gate` out,
deselected and counted, `--gates` runs only them; under `pytest -n 2` (the README's test
command) the controller still prints the tier line, the sample and the CPU time, each worker's
counted once (tests/support/workers.py)."""
import os
import re
import sys
from pathlib import Path

import pytest

from support import sampling

TESTS = Path(__file__).resolve().parent

TIERED_FILE = """
import pytest

@pytest.mark.gate
def test_reads_sm90_code():
    pass

@pytest.mark.sampled
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_kernel(cell, dtype):
    pass

def test_plain():
    pass
"""


@pytest.fixture
def tiered(pytester, monkeypatch, tmp_path):
    monkeypatch.setattr(sampling, "REPORT", tmp_path / "sample.txt")
    monkeypatch.setenv(sampling.FULL_ENV, "")
    pytester.makepyfile(test_k=TIERED_FILE)
    return pytester


PLUGINS = ("-p", "support.workers", "-p", "support.sampling", "-p", "support.tiers", "-p", "no:cacheprovider")


def test_the_default_run_leaves_the_gates_out_and_says_so(tiered):
    res = tiered.runpytest(*PLUGINS)
    res.assert_outcomes(passed=3, deselected=3)  # test_kernel: 2 of 4 cases; the gate
    res.stdout.fnmatch_lines(["tiers: 1 compile-gate tests deselected*`bash scripts/test.sh --gates` runs them*"])


def test_gates_runs_the_gates_and_the_cases_the_default_sample_left_out(tiered):
    res = tiered.runpytest(*PLUGINS, "--gates")
    res.assert_outcomes(passed=3, deselected=3)  # the gate, test_kernel's other 2 cases
    res.stdout.fnmatch_lines(["tiers: 3 behaviour tests deselected*`bash scripts/test.sh` runs them*",
                              "*the default run's sample: the 2 cases of 1 sampled behaviour tests it left out ran here*",
                              "*2 of     4  test_k.py::test_kernel"])


def _ran(res) -> list[str]:
    return sorted(line.split(" ")[0] for line in res.outlines if " PASSED" in line)


def test_the_two_tiers_run_every_case_once_between_them(tiered, monkeypatch):
    """default + gates = every collected case, none twice: what the sample leaves out of the
    README's test command, CI's second command runs (and -k narrows both alike)."""
    monkeypatch.setenv(sampling.FULL_ENV, "1")
    every = _ran(tiered.runpytest(*PLUGINS, "-v", "--all-tiers"))
    monkeypatch.setenv(sampling.FULL_ENV, "")
    assert len(every) == 6
    for k in ([], ["-k", "lstm or plain or sm90"]):
        default, gates = _ran(tiered.runpytest(*PLUGINS, "-v", *k)), _ran(tiered.runpytest(*PLUGINS, "-v", "--gates", *k))
        assert not set(default) & set(gates) and sorted(default + gates) == [t for t in every if not k or
                                                                              any(w in t for w in ("lstm", "plain", "sm90"))]


def test_a_full_default_run_leaves_the_gates_run_only_the_gates(tiered, monkeypatch):
    monkeypatch.setenv(sampling.FULL_ENV, "1")
    tiered.runpytest(*PLUGINS).assert_outcomes(passed=5, deselected=1)
    tiered.runpytest(*PLUGINS, "--gates").assert_outcomes(passed=1, deselected=5)


def test_all_tiers_runs_both(tiered):
    res = tiered.runpytest(*PLUGINS, "--all-tiers")
    res.assert_outcomes(passed=4, deselected=2)  # the sample's two cases only
    assert "tiers:" not in res.stdout.str()


def test_under_xdist_the_summary_lines_still_come(tiered, monkeypatch):
    pytest.importorskip("xdist", reason="pytest-xdist is not installed (requirements-dev.txt has it)")
    # the workers are new processes: they find tests/support the way this one did
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), *sys.path]))
    res = tiered.runpytest_subprocess(*PLUGINS, "-n", "2")
    res.assert_outcomes(passed=3)
    res.stdout.fnmatch_lines(["tiers: 1 compile-gate tests deselected*",
                              "*sampled: 2 of 4 cases of 1 parametrised tests ran, 2 left out*"])


def test_under_xdist_the_cpu_time_counts_each_worker_once(tiered, monkeypatch):
    """The workers are the controller's children, reaped before the summary: counted once, the
    total is the test's CPU time and little more (counted twice, it was above twice that)."""
    pytest.importorskip("xdist", reason="pytest-xdist is not installed (requirements-dev.txt has it)")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), *sys.path]))
    tiered.makepyfile(test_burn="def test_burn():\n    sum(i * i for i in range(40_000_000))\n")
    res = tiered.runpytest_subprocess("-p", "support.workers", "-p", "support.cpu_time", "-p", "no:cacheprovider",
                                      "-n", "2", "--cpu-durations=3", "test_burn.py")
    res.assert_outcomes(passed=1)
    out = res.stdout.str()
    total = float(re.search(r"CPU time \(user\+sys, with subprocesses\): (\d+) s in all", out).group(1))
    burn = float(re.search(r"([\d.]+) s  test_burn.py::test_burn", out).group(1))
    assert burn >= 1 and burn - 1 <= total <= burn + 2.5, (total, burn)  # + the processes' own bookkeeping
    # each test's line goes under the run's own root, not over this checkout's build/ record
    logs = "".join(p.read_text() for p in (tiered.path / "build").glob("test-cpu-times*.txt"))
    assert "test_burn.py::test_burn" in logs
