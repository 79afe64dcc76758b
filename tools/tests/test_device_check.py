"""benchmarks/device_check.sh without a GPU: the CPU rehearsal with a hung stage still
returns summary.md, junit.xml, the results and the artifacts within its deadline; and
the pieces on their own (stopping a process group, budgets, junit and -v log parsing,
exit codes, the archive's size limits, the plan in benchmarks/README.md)."""
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from benchmarks import junit
from tools.device_check import jobs, pack, plan, smoke, tiers
from tools.device_check.context import (BUILD_FAILED, CRASH, DEADLINE, GPU_TEST_ORDER, NO_GPU, OK, OTHER,
                                             WRONG, Ctx, StageResult, default_tests)

REPO = Path(__file__).resolve().parents[2]


def test_rehearsal_with_a_hung_stage_returns_summary_junit_and_results(tmp_path):
    """The CI proof: tests hang (a planted test sleeps), one planted test fails; the stage
    is stopped with SIGINT, pytest still writes junit, the benchmark and the triage run."""
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, FUSEDRNN_DEVICE_CHECK_HANG="tests", FUSEDRNN_DEVICE_CHECK_FAIL="1",
               PYTHON=sys.executable)
    deadline = 60
    t0 = time.monotonic()
    proc = subprocess.run(["bash", "benchmarks/device_check.sh", "--rehearse", "--deadline", str(deadline),
                           "--skip", "load,calibrate,smoke", "--tests", "tools/device_check/probe_tests.py",
                           "--bench-dtypes", "fp32", "--out", str(out), "--work", str(work)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=deadline + 60)
    took = time.monotonic() - t0
    assert took < deadline + 10, proc.stdout[-3000:]
    assert proc.returncode == WRONG, proc.stdout[-3000:] + proc.stderr[-2000:]   # wrong beats deadline
    assert sorted(p.name for p in out.iterdir()) == ["artifacts.tar.gz", "device_check.log", "junit.xml",
                                                     "results-fp32.json", "summary.md"]
    md = (out / "summary.md").read_text()
    assert md.startswith(f"# fusedrnn device check: exit code {WRONG}: wrong results")
    assert re.search(r"\| tests \| TIMED OUT \| \d+ \| 1 passed, 1 failed, 0 errors, 0 skipped, 1 interrupted", md), md
    assert "probe_tests.py::test_probe_hangs | interrupted | still running when the stage was stopped" in md
    assert "| load | skipped (--skip) |" in md and re.search(r"\| bench \| ok \| \d+ \| fp32: \d+ timed, 0 wrong", md)
    assert "probe_tests.py::test_probe_fails | wrong | AssertionError: probe: a planted wrong result" in md
    assert "| fails alone |" in md
    assert "CPU timings (rehearsal): not representative" in md and "vs cudnn" not in md
    rep = junit.parse_junit(out / "junit.xml")                      # written after SIGINT
    assert (rep.passed, rep.failed) == (1, 1) and rep.source == "junit"
    assert rep.failures[0].nodeid == "tools/device_check/probe_tests.py::test_probe_fails"
    data = json.loads((out / "results-fp32.json").read_text())
    assert data["meta"]["device_type"] == "cpu" and data["rows"]
    assert all(r["speedup_vs_baseline"] is None for r in data["rows"])
    with tarfile.open(out / "artifacts.tar.gz") as tar:
        names = tar.getnames()
        state = json.loads(tar.extractfile("device_check.json").read())
    assert {"tests/pytest.log", "env/env.json", "bench/fp32.log", "triage/0.log"} <= set(names)
    assert state["exit_code"] == WRONG and [s["name"] for s in state["stages"]] == ["env", "tests", "bench", "triage"]
    assert "test_probe_hangs" in (work / "tests" / "pytest.log").read_text()
    assert "== tests: TIMED OUT" in (out / "device_check.log").read_text()
    # what came back files like a real run (a CPU one only when asked, and never into the README table)
    from benchmarks import readme_block, record
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    (repo / "README.md").write_text(f"{readme_block.BEGIN}\nx\n{readme_block.END}\n")
    assert record.main([str(out), "--repo", str(repo), "--allow-cpu"]) == 0
    filed = json.loads(next((repo / "benchmarks" / "results").glob("*-cpu/results.json")).read_text())
    assert filed["meta"]["device_check"]["exit_code"] == WRONG and filed["rows"]
    assert readme_block.NONE_YET in (repo / "README.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the stop without a GPU")
def test_without_rehearse_and_without_cuda_it_stops_at_once(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tools.device_check", "--out", str(tmp_path / "o"),
                           "--work", str(tmp_path / "w")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == NO_GPU
    assert "torch sees no CUDA device: stopping (use --rehearse for the CPU rehearsal)" in proc.stdout
    md = (tmp_path / "o" / "summary.md").read_text()
    assert "| env | NO GPU |" in md and "| load | not run: env failed |" in md


def test_bad_arguments_exit_2():
    from tools.device_check.__main__ import main
    assert main(["--skip", "bogus"]) == 2
    assert main(["--deadline", "3"]) == 2


# ---- pieces -----------------------------------------------------------------------------------

def test_a_stopped_job_gets_sigint_then_sigkill_with_its_children(tmp_path):
    stubborn = ("import signal, subprocess, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                "print('started', flush=True); time.sleep(60)")
    t0 = time.monotonic()
    o = jobs.run([sys.executable, "-c", stubborn], tmp_path / "a.log", seconds=1.5, grace_s=0.5)
    assert o.timed_out and o.killed and o.rc == -9 and time.monotonic() - t0 < 10
    log = (tmp_path / "a.log").read_text()
    assert "started" in log and "SIGINT, then SIGKILL" in log
    polite = "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('interrupted', flush=True)\n"
    o = jobs.run([sys.executable, "-c", polite], tmp_path / "b.log", seconds=1.5, grace_s=5)
    assert o.timed_out and not o.killed and o.rc == 0 and "interrupted" in (tmp_path / "b.log").read_text()
    o = jobs.run(["/nonexistent/tool"], tmp_path / "c.log", seconds=1)
    assert o.rc is None and "could not start" in o.error


def test_a_job_started_with_sigint_ignored_still_gets_it(tmp_path):
    """A device check started with SIGINT ignored (a background job of a non-interactive shell,
    a pytest-xdist worker) passes no ignore on: the stopped child is interrupted, not killed."""
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "from tools.device_check import jobs\n"
            "polite = 'import time\\ntry:\\n    time.sleep(60)\\nexcept KeyboardInterrupt:\\n    print(\\'interrupted\\')\\n'\n"
            f"o = jobs.run([sys.executable, '-c', polite], {str(tmp_path / 'p.log')!r}, seconds=3, grace_s=10)\n"
            "print(o.rc, o.killed)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["0", "False"], proc.stdout + proc.stderr
    assert "interrupted" in (tmp_path / "p.log").read_text()


def test_budgets_keep_the_reserves_of_later_stages():
    assert plan.budget("tests", 1000, rehearse=False) == plan.by_name("tests").cap_s
    left = 200
    later = plan.by_name("bench").reserve_s
    assert plan.budget("tests", left, rehearse=False) == left - plan.FINALIZE_S - later
    assert plan.budget("tests", left, rehearse=False, skipped=("bench",)) == min(240, left - plan.FINALIZE_S)
    assert plan.budget("smoke", 5, rehearse=False) == 0


def test_plan_fits_nine_minutes():
    assert plan.total_estimate_s() <= plan.PLAN_LIMIT_S <= plan.DEFAULT_DEADLINE_S - 60
    # the GPU window runs no compiler before the tests: the prebuilt kernels, then the calibration
    assert plan.NAMES == ("env", "load", "calibrate", "smoke", "tests", "bench", "triage")
    assert plan.by_name("load").estimate_s + plan.by_name("calibrate").estimate_s <= 60


def test_exit_code_is_the_most_severe_category():
    ctx = Ctx(repo=REPO, out=REPO, work=REPO, rehearse=True, deadline_s=10)
    assert ctx.exit_code() == OK
    ctx.results.append(StageResult("x", categories=["other"]))
    assert ctx.exit_code() == OTHER
    ctx.results.append(StageResult("y", categories=["deadline", "wrong"]))
    assert ctx.exit_code() == WRONG
    ctx.results.append(StageResult("z", categories=["crash"]))
    assert ctx.exit_code() == CRASH
    ctx.results.append(StageResult("b", categories=["build"]))
    assert ctx.exit_code() == BUILD_FAILED
    assert len({OK, NO_GPU, BUILD_FAILED, CRASH, WRONG, DEADLINE, OTHER}) == 7


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="5">
<testcase classname="tests.gpu.test_cuda_gpu" name="test_small_sizes[T1-lstm-fp32]" file="tests/gpu/test_cuda_gpu.py"/>
<testcase classname="tests.gpu.test_cuda_gpu" name="test_anchor_shapes[gru-bf16]" file="tests/gpu/test_cuda_gpu.py">
  <failure message="AssertionError: gru T=1024: y: error 0.5 &gt; tol 0.01">long traceback</failure></testcase>
<testcase classname="tests.gpu.test_triton_gpu.TestGrid" name="test_x" file="tests/gpu/test_triton_gpu.py">
  <failure message="RuntimeError: CUDA error: an illegal memory access was encountered">tb</failure></testcase>
<testcase classname="tests.gpu.test_triton_gpu" name="test_slow" file="tests/gpu/test_triton_gpu.py">
  <failure message="Failed: Timeout &gt;120.0s">+++ Timeout +++</failure></testcase>
<testcase classname="tests.gpu.test_integration_gpu" name="test_skip" file="tests/gpu/test_integration_gpu.py">
  <skipped message="no CUDA"/></testcase>
</testsuite></testsuites>"""


def test_junit_counts_node_ids_and_kinds(tmp_path):
    (tmp_path / "j.xml").write_text(JUNIT)
    rep = junit.parse_junit(tmp_path / "j.xml")
    assert (rep.tests, rep.passed, rep.failed, rep.errors, rep.skipped) == (5, 1, 3, 0, 1)
    got = [(f.nodeid, f.kind) for f in rep.failures]
    assert got == [("tests/gpu/test_cuda_gpu.py::test_anchor_shapes[gru-bf16]", junit.WRONG),
                   ("tests/gpu/test_triton_gpu.py::TestGrid::test_x", junit.CRASH),
                   ("tests/gpu/test_triton_gpu.py::test_slow", junit.HANG)]
    assert junit.classify("worker 'gw3' crashed while running 'x'") == junit.CRASH
    assert junit.classify("Failed: DID NOT RAISE <class 'ValueError'>") == junit.WRONG


def test_a_killed_pytest_is_rebuilt_from_its_verbose_log(tmp_path):
    log = ("tests/gpu/a.py::test_one PASSED [ 10%]\n"
           "[gw1] [ 20%] FAILED tests/gpu/b.py::test_two[lstm-fp16]\n"
           "[gw0] [ 30%] SKIPPED tests/gpu/b.py::test_three\n"
           "tests/gpu/c.py::test_four ERROR\n")
    assert junit.unfinished(log + "tests/gpu/d.py::test_five \n[gw1] [ 40%] PASSED tests/gpu/d.py::test_five\n"
                                  "tests/gpu/d.py::test_six \n") == ["tests/gpu/d.py::test_six"]
    rep = junit.parse_verbose_log(log)
    assert (rep.tests, rep.passed, rep.failed, rep.errors, rep.skipped) == (4, 1, 1, 1, 1)
    junit.write_from_report(rep, tmp_path / "j.xml", "rebuilt")
    again = junit.parse_junit(tmp_path / "j.xml")
    assert sorted(f.nodeid for f in again.failures) == ["tests/gpu/b.py::test_two[lstm-fp16]", "tests/gpu/c.py::test_four"]


def test_the_archive_clips_big_logs_and_stays_under_its_limit(tmp_path, monkeypatch):
    work = tmp_path / "w"
    (work / "tests").mkdir(parents=True)
    (work / "tests" / "pytest.log").write_bytes(b"head\n" + os.urandom(4000) + b"\ntail\n")
    (work / "big.bin").write_bytes(os.urandom(30000))
    monkeypatch.setattr(pack, "PER_FILE", 2000)
    monkeypatch.setattr(pack, "HEAD", 500)
    monkeypatch.setattr(pack, "ARCHIVE_LIMIT", 3000)
    left_out = pack.pack(work, tmp_path / "a.tar.gz")
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        assert tar.getnames() == ["tests/pytest.log"]
        data = tar.extractfile("tests/pytest.log").read()
    assert data.startswith(b"head") and data.endswith(b"tail\n") and b"bytes cut by the device check" in data
    assert left_out == ["big.bin"] and not (tmp_path / "a.tar.gz.part").exists()
    assert (tmp_path / "a.tar.gz").stat().st_size <= 3000


def test_kernel_list_is_every_tier_times_every_cell():
    gpu, cpu = tiers.kernel_ids(rehearse=False), tiers.kernel_ids(rehearse=True)
    assert len(gpu) == len(set(gpu)) == len([t for t in tiers.TIERS if not t.rehearse_only]) * len(tiers.CELLS)
    assert {"cuda/cta/lstm", "cuda/grid-passes/gru", "cuda/step/rnn_relu", "triton/grid/gru",
            "triton/cta/rnn_tanh"} <= set(gpu)
    # every tier a backend can be forced into is exercised (a new one must be added here)
    from fusedrnn.ops import cuda as cuda_ops
    from fusedrnn.ops.triton import config
    names = lambda backend: {t.name.split("-")[0] for t in tiers.TIERS if t.backend == backend}  # noqa: E731
    assert names("cuda") == set(cuda_ops.MODES) - {"auto", "persistent"}
    assert names("triton") == set(config.LAYOUTS)
    assert "reference/loop/lstm" in cpu and "reference/loop/lstm" not in gpu
    for kid in cpu:
        assert tiers.find(kid)[1] == kid.split("/")[2]
    with pytest.raises(KeyError):
        tiers.find("cuda/warp-specialized/lstm")


def test_smoke_verdicts(tmp_path):
    log = tmp_path / "k.log"
    log.write_text("line\nRuntimeError: CUDA error: an illegal memory access was encountered\n")
    res = tmp_path / "k.json"
    assert smoke._judge("cuda/step/lstm", jobs.Outcome(1, 2.0, False, False), res, log, False, 60)["status"] == "CRASH"
    assert smoke._judge("cuda/step/lstm", jobs.Outcome(-2, 60.0, True, False), res, log, False, 60)["status"] == "HANG"
    log.write_text("========= ERROR SUMMARY: 3 errors\n")
    assert smoke._judge("cuda/step/lstm", jobs.Outcome(99, 5.0, False, False), res, log, True, 60)["status"] == "MEMORY"
    res.write_text(json.dumps({"id": "cuda/step/lstm", "status": "ok", "errors": {"fp32": 1e-7}}))
    log.write_text("========= ERROR SUMMARY: 0 errors\n")
    ok = smoke._judge("cuda/step/lstm", jobs.Outcome(0, 5.0, False, False), res, log, True, 60)
    assert ok["status"] == "ok" and ok["sanitizer_errors"] == 0


def test_smoke_worker_catches_a_wrong_kernel(monkeypatch):
    """The smoke's comparison is live: a backend whose output is off is WRONG."""
    import fusedrnn.ops as ops
    real = ops.recurrence

    def off(cell, *a, **k):  # the float64 oracle stays right, the checked call is 1% off
        outs = real(cell, *a, **k)
        return (outs[0] * (1.0 if outs[0].dtype == torch.float64 else 1.01),) + tuple(outs[1:])
    monkeypatch.setattr(ops, "recurrence", off)
    r = smoke.run_one("reference/loop/gru")
    assert r["status"] == "WRONG" and "fp32 error" in r["detail"]


def test_the_tests_stage_runs_every_gpu_file_once_short_ones_first():
    got = default_tests(REPO)
    on_disk = sorted(f"tests/gpu/{p.name}" for p in (REPO / "tests" / "gpu").glob("test_*.py"))
    assert sorted(got) == on_disk
    assert got[0] == "tests/gpu/test_reference_gpu.py"
    assert set(GPU_TEST_ORDER) <= {p.rsplit("/", 1)[1] for p in got}, "GPU_TEST_ORDER names a file that is gone"
