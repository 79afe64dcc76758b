"""`python -m benchmarks.run` on a machine without a GPU: clear argument errors (exit 2),
the CPU default end to end on tiny shapes (table, JSON, Markdown; no speedups, no plot),
the GPU plan it would run, the output folder, and `benchmarks.latest`."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import latest, meta, report, run, stats
from benchmarks.anchors import anchor_ms
from benchmarks.model_cases import DECODE_VARIANTS
from benchmarks.shapes import ANCHOR_SHAPES

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "1,2"], "invalid shape '1,2'"),
    (["--shapes", "1,0,8"], "invalid shape '1,0,8'"),
    (["--cells", "lstm,lstn"], "invalid choice 'lstn'"),
    (["--dtypes", "fp8"], "invalid choice 'fp8'"),
    (["--modes", "fwd"], "invalid choice 'fwd'"),
    (["--providers", "cudnn,magic"], "invalid choice 'magic'"),
    (["--reps", "0"], "expected a positive integer"),
    (["--time-limit", "-3"], "expected a positive number of seconds"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_argument_errors_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        run.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage:" in err


def test_argument_error_from_the_command_line():
    out = subprocess.run([sys.executable, "-m", "benchmarks.run", "--modes", "fw,backward"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "argument --modes: invalid choice 'backward' (choose from fw, fwbw)" in out.stderr


def test_lists_take_commas_and_spaces():
    args = run.build_parser().parse_args(["--cells", "lstm,gru", "rnn_tanh", "--dtypes", "bfloat16", "fp32",
                                          "--shapes", "1,2,3", "4x5x6"])
    cfg = run.configure(args, on_gpu=False)
    assert cfg.dtypes == ["bf16", "fp32"]
    assert {c.cell for c, *_ in cfg.plan if c.section == "layer"} == {"lstm", "gru", "rnn_tanh"}
    assert {(c.B, c.T, c.H) for c, *_ in cfg.plan if c.section == "layer"} == {(1, 2, 3), (4, 5, 6)}


def test_gpu_plan_defaults_to_the_anchor_set():
    cfg = run.configure(run.build_parser().parse_args([]), on_gpu=True)
    assert [p.name for p in cfg.providers] == ["cudnn", "cudnn-fp16", "fusedrnn-cuda", "fusedrnn-triton"]
    assert cfg.dtypes == ["fp32", "bf16", "fp16"] and cfg.modes == ["fw", "fwbw"]
    assert (cfg.warmup, cfg.reps, cfg.baseline, cfg.baseline_fp16) == (3, 20, "cudnn", "cudnn-fp16")
    layer = [c for c, *_ in cfg.plan if c.section == "layer"]
    assert len(layer) == 15 and {(c.B, c.T, c.H) for c in layer} == set(ANCHOR_SHAPES)
    assert all(c.I == c.H and c.layers == 1 and not c.bidirectional for c in layer)
    assert all(anchor_ms(c, d, m) is not None for c in layer for d in cfg.dtypes for m in cfg.modes)
    model = {c.label: c for c, *_ in cfg.plan if c.section == "model"}
    names = sorted(c.name for c in model.values())
    assert names == ["decode"] * 8 + ["encoder-packed", "encoder-padded"]
    enc = next(c for c in model.values() if c.packed)
    assert (enc.B, enc.T, enc.I, enc.H, enc.layers, enc.bidirectional, enc.min_len) == (32, 512, 256, 512, 2, True, 256)
    assert {(c.B, c.H) for c in model.values() if c.decode} == {(1, 1024), (8, 512)}
    # each size called as the module with T=1 and as a stack of cells, eager and graph-captured
    assert {(c.api, c.graph) for c in model.values() if c.decode} == set(DECODE_VARIANTS)
    assert all(anchor_ms(c, "fp32", "fw") in (0.155, 0.159) for c in model.values() if c.decode)
    # options: the baseline is always there, eager is opt-in
    cfg = run.configure(run.build_parser().parse_args(["--providers", "fusedrnn-triton", "--eager",
                                                        "--cases", "layer", "--layers", "2", "--bidirectional"]),
                        on_gpu=True)
    assert [p.name for p in cfg.providers] == ["cudnn", "fusedrnn-triton", "eager"]
    assert all(c.section == "layer" and c.layers == 2 and c.bidirectional for c, *_ in cfg.plan)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU default runs where there is no GPU")
def test_cpu_default_on_tiny_shapes_writes_table_json_markdown(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = run.main(["--shapes", "2,3,4", "--reps", "2", "--warmup", "0", "--progress", "lines", "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("No CUDA GPU: running the CPU default")
    assert "NOT representative of GPU performance" in printed and "cases per provider" in printed
    assert "no plot: CPU timings are not representative" in printed and "speedup" not in printed.lower().replace(
        "never turned into speedups", "").replace("no speedup is plotted", "")
    assert "[1/" in printed and "lstm B=2 T=3 H=4 fp32: torch-cpu fw" in printed       # a line per case
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    assert rc == (1 if any(r["status"] == "WRONG" for r in rows) else 0)
    assert data["meta"]["device_type"] == "cpu" and data["meta"]["timer"].startswith("host timer")
    assert data["meta"]["commit"] and data["meta"]["torch"] == torch.__version__
    layer = [r for r in rows if r["section"] == "layer"]
    assert {(r["cell"], r["mode"]) for r in layer} == {(c, m) for c in ("lstm", "gru", "rnn_tanh") for m in ("fw", "fwbw")}
    for r in layer:
        assert r["speedup_vs_baseline"] is None and r["vs_best_anchor"] is None
        if r["provider"] == "torch-cpu":
            assert r["status"] == "ok" and r["median_ms"] > 0 and r["n"] == 2
            assert r["p25_ms"] <= r["median_ms"] <= r["p75_ms"] and r["iqr_pct"] is not None
        if r["status"] in ("ok", "WRONG"):
            assert r["max_rel_err"] is not None
        if r["status"] == "WRONG":
            assert r["median_ms"] is None
    backends = {r["provider"] for r in layer}
    assert {"torch-cpu", "fusedrnn-reference", "fusedrnn-triton", "fusedrnn-cuda"} <= backends
    assert {r["section"] for r in rows} == {"layer", "model", "variant"}  # tiny model and variant cases too
    assert all(s["geomean_vs_baseline"] is None for s in data["summary"])
    md = (out / "results.md").read_text()
    assert md.count("| lstm B=2 T=3 H=4 |") == sum(1 for r in layer if r["cell"] == "lstm")
    assert not (out / "speedup.png").exists()


def _record(root: Path, card: str, date: str, ms: float) -> Path:
    rows = [{"section": "layer", "case": "lstm B=1 T=2 H=3", "dtype": "fp32", "mode": "fw", "provider": p,
             "median_ms": t, "min_ms": t, "max_ms": t, "n": 3, "status": "ok", "note": "", "max_rel_err": 0.0,
             "tokens": 2, "tokens_per_s": stats.tokens_per_s(2, t), "anchor_ms": None, "best_anchor_ms": None}
            for p, t in (("cudnn", 2 * ms), ("fusedrnn-cuda", ms))]
    stats.attach_speedups(rows)
    m = {"device_type": "cuda", "card": card, "date": date, "baseline": "cudnn", "baseline_fp16": "cudnn-fp16"}
    folder = meta.default_out_dir(m, root)
    report.write(folder, rows, stats.summary(rows), m)
    return folder


def test_latest_prints_the_newest_record(tmp_path, capsys):
    assert "No GPU benchmark run is recorded" in latest.latest_markdown(tmp_path)
    old = _record(tmp_path, "Old Card", "2030-01-01T00:00:00+00:00", 1.0)
    new = _record(tmp_path, "NVIDIA H100 80GB HBM3", "2030-02-01T00:00:00+00:00", 4.0)
    assert new.name == "2030-02-01-nvidia-h100-80gb-hbm3" and old.name == "2030-01-01-old-card"
    (tmp_path / "2031-01-01-cpu").mkdir()                                 # CPU runs are not records
    (tmp_path / "2031-01-01-cpu" / "results.json").write_text(json.dumps({"meta": {"device_type": "cpu",
                                                                                    "date": "2031-01-01"}}))
    assert latest.main(["--root", str(tmp_path), "--summary"]) == 0
    md = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3, 2030-02-01" in md and "Old Card" not in md
    assert "| layer | fusedrnn-cuda | fp32 | fw | 1/1 | 0 | 2.00x |" in md
    # a second run on the same card and day is kept beside the first, not over it
    again = _record(tmp_path, "NVIDIA H100 80GB HBM3", "2030-02-01T05:06:07+00:00", 4.0)
    assert again.name == "2030-02-01-nvidia-h100-80gb-hbm3-050607"


def test_results_go_to_the_working_directory_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = {"device_type": "cpu", "card": "CPU: x", "date": "2030-01-01T00:00:00+00:00"}
    assert meta.default_out_dir(m) == tmp_path / "fusedrnn-bench" / "2030-01-01-cpu"


def test_git_commit_can_be_given(monkeypatch):
    monkeypatch.setenv("FUSEDRNN_GIT_COMMIT", "abc123")
    assert meta.git_info()["commit"] == "abc123"
    assert meta.git_info()["commit_source"] == "FUSEDRNN_GIT_COMMIT"
    monkeypatch.delenv("FUSEDRNN_GIT_COMMIT")
    commit = meta.git_info()["commit"]   # the checkout fusedrnn is imported from
    assert commit == "unknown" or len(commit) == 40
