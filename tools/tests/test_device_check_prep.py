"""The device check's stages before the smoke, without a GPU: the load stage's answer to a
refused prebuilt artifact (refuse, or rebuild and say so), the calibration's plumbing and
file format, the CPU's slow interpreter kernels (not hangs), and the second-call commands
the summary gives for what was cut short."""
import json
from pathlib import Path

import pytest

from tools.device_check import calibrate, jobs, prebuilt, prep_stages, smoke, stages, summary
from tools.device_check.context import BUILD_FAILED, OK, OTHER, Ctx, StageResult

REPO = Path(__file__).resolve().parents[2]
#: the keys of calibration.json (schema 1) that fusedrnn/machine.py reads
TOP = {"schema", "meaningful", "card", "sm_count", "clock_ghz", "constants", "max_active_clusters", "notes"}


def _ctx(tmp_path, rehearse=True) -> Ctx:
    ctx = Ctx(repo=REPO, out=tmp_path / "out", work=tmp_path / "work", rehearse=rehearse, deadline_s=300,
              say=lambda s: None)
    ctx.out.mkdir()
    ctx.work.mkdir()
    return ctx


def _refusing_run(ctx, name, cmd, log, seconds, env=None, echo=None):
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("$ prebuilt load\nprebuilt: REFUSED: stale prebuilt CUDA artifact: built from sources abc\n")
    return jobs.Outcome(prebuilt.REFUSED, 0.5, False, False)


def test_a_refused_artifact_stops_the_run_when_the_policy_is_refuse(tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "_run", _refusing_run)
    monkeypatch.setenv(prep_stages.POLICY_ENV, "refuse")
    monkeypatch.setattr(stages, "build", lambda ctx, s: pytest.fail("refuse must not build"))
    ctx = _ctx(tmp_path, rehearse=False)
    r = prep_stages.load(ctx, 60)
    ctx.results.append(r)
    assert r.status == "REFUSED" and r.first_error.startswith("stale prebuilt CUDA artifact")
    assert ctx.exit_code() == BUILD_FAILED


def test_a_refused_artifact_is_rebuilt_from_source_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "_run", _refusing_run)
    monkeypatch.delenv(prep_stages.POLICY_ENV, raising=False)        # the GPU's default: rebuild
    built = []
    monkeypatch.setattr(stages, "build", lambda ctx, s: built.append(s) or StageResult("build", status="ok",
                                                                                          seconds=80.0))
    monkeypatch.setattr(prep_stages, "_triton_cache", lambda ctx, r, d: None)
    ctx = _ctx(tmp_path, rehearse=False)
    r = prep_stages.load(ctx, 200)
    ctx.results.append(r)
    assert built and r.status.startswith("REBUILT from source (ok)") and "stale" in r.first_error
    assert r.seconds == pytest.approx(80.5) and ctx.exit_code() == OTHER    # it ran, but the window paid for it


def test_the_rehearsal_refuses_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "_run", _refusing_run)
    monkeypatch.delenv(prep_stages.POLICY_ENV, raising=False)
    monkeypatch.setattr(stages, "build", lambda ctx, s: pytest.fail("a CPU rebuild cannot fit a rehearsal"))
    assert prep_stages.load(_ctx(tmp_path), 60).status == "REFUSED"


def test_calibration_without_an_artifact_writes_a_file_that_says_why(tmp_path):
    assert calibrate.main(["--out", str(tmp_path / "c.json"), "--dir", str(tmp_path / "none"), "--rehearse"]) == 0
    c = json.loads((tmp_path / "c.json").read_text())
    assert set(c) >= TOP and c["schema"] == 1 and c["meaningful"] is False and c["constants"] == {}
    assert c["notes"].startswith("not measured: no prebuilt CUDA artifact")
    assert calibrate.main(["--out", str(tmp_path / "d.json"), "--dir", str(tmp_path / "none")]) == 1   # on a GPU


def test_the_calibration_stage_on_the_cpu_runs_the_plumbing_and_says_it_is_not_meaningful(tmp_path):
    m, why = prebuilt.check(REPO)
    if why:
        pytest.skip(f"no current prebuilt artifact here: {why}")
    ctx = _ctx(tmp_path)
    r = prep_stages.calibrate(ctx, 120)
    assert r.status == "plumbing ok: numbers NOT meaningful (CPU rehearsal)", (r.status, r.first_error)
    c = json.loads((ctx.out / "calibration.json").read_text())
    assert c["meaningful"] is False and c["constants"] == {} and "CUDA error" in c["notes"]
    assert m["persistent_kernels"] and any(calibrate.OCCUPANCY_KERNEL in k for k in m["persistent_kernels"])


def test_the_calibration_measures_every_constant_the_model_takes_and_the_notes_list_them():
    from fusedrnn import machine
    assert set(calibrate.CONSTANTS) == set(machine.CALIBRATED)  # what a calibration file replaces
    text = (REPO / "benchmarks" / "NOTES.md").read_text()
    table = text[text.index("## Modelled vs measured constants"):]
    for name in calibrate.CONSTANTS:
        assert f"| `{name}` |" in table, name
    for name in calibrate.CONSTANTS:
        modelled = float(table.split(f"| `{name}` |")[1].split("|")[1])
        assert modelled == pytest.approx(machine.CALIBRATED[name]), name


def test_a_cpu_interpreter_kernel_past_its_limit_is_slow_not_hung(tmp_path):
    log = tmp_path / "k.log"
    log.write_text("still computing\n")
    late = jobs.Outcome(-2, 120.0, True, False)
    r = smoke._judge("triton/solo/lstm", late, tmp_path / "none.json", log, False, 120, interpreted=True)
    assert r["status"] == smoke.SLOW and "not a hang" in r["detail"] and r["status"] not in stages.SMOKE_CATEGORY
    assert smoke._judge("cuda/grid/lstm", late, tmp_path / "none.json", log, False, 90)["status"] == smoke.HANG


def test_the_summary_names_what_was_cut_with_the_command_for_a_second_call(tmp_path):
    ctx = _ctx(tmp_path, rehearse=False)
    ctx.commit = "c" * 40
    ctx.results += [StageResult("env", status="ok"), StageResult("load", status="ok"),
                    StageResult("smoke", status="ok"),
                    StageResult("tests", status="TIMED OUT", categories=["deadline"]),
                    StageResult("bench", status="not started: no time left", categories=["deadline"])]
    md = summary.render(ctx, final=True)
    assert "## Cut short: a second call" in md
    assert ("- tests: `FUSEDRNN_GIT_COMMIT=" + "c" * 40 + " bash benchmarks/device_check.sh --skip "
            "calibrate,smoke,bench,triage --tests") in md
    assert "- bench: `FUSEDRNN_GIT_COMMIT=" in md and "--skip calibrate,smoke,tests,triage --bench-dtypes" in md
    ctx.rehearse = True   # a rehearsal's second call is a rehearsal too
    assert "device_check.sh --rehearse --skip calibrate,smoke,bench,triage --tests" in summary.render(ctx, final=True)
    ctx.results[3:] = [StageResult("tests", status="ok"), StageResult("bench", status="ok")]
    assert "Cut short" not in summary.render(ctx, final=True) and ctx.exit_code() == OK


def test_a_rehearsal_smoke_cut_at_its_limit_names_its_unfinished_kernels_without_failing(tmp_path, monkeypatch):
    stopped = "not started: the stage ran out of time"
    rows = [{"id": "triton/solo/lstm", "status": "ok"}, {"id": "triton/cta/gru", "status": smoke.SLOW},
            {"id": "triton/solo/gru", "status": "skipped", "detail": stopped},
            {"id": "cuda/grid/gru", "status": "skipped", "detail": stopped}]   # GPU-only: never runs here

    def cut_run(ctx, name, cmd, log, seconds, env=None, echo=None):
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "smoke.json").write_text(json.dumps(rows))
        return jobs.Outcome(-2, seconds, True, False)
    monkeypatch.setattr(stages, "_run", cut_run)
    ctx = _ctx(tmp_path)
    r = stages.smoke(ctx, 100)
    ctx.results.append(r)
    assert r.status.startswith("cut at its limit: 2 kernels unfinished") and ctx.exit_code() == OK
    assert "- smoke: `FUSEDRNN_GIT_COMMIT=" in summary.render(ctx, final=True)
    ctx.rehearse = False     # on the GPU the same cut is out of time
    assert "deadline" in stages.smoke(ctx, 100).categories


def test_a_refused_artifact_is_not_reported_as_calibration_plumbing(tmp_path, monkeypatch):
    def refused_run(ctx, name, cmd, log, seconds, env=None, echo=None):   # calibrate's own answer (above)
        assert calibrate.main(cmd[cmd.index("--out"):] + ["--dir", str(tmp_path / "none"), "--rehearse"]) == 0
        log.write_text("")
        return jobs.Outcome(0, 0.1, False, False)
    monkeypatch.setattr(stages, "_run", refused_run)
    ctx = _ctx(tmp_path)
    r = prep_stages.calibrate(ctx, 120)
    ctx.results.append(r)
    assert r.status == "NOT RUN" and "no prebuilt CUDA artifact" in r.first_error and ctx.exit_code() == OTHER
