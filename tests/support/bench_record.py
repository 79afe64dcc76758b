"""A fetched benchmark run and a repository to record it into, for the record and tuning tests."""
import io
import json
import tarfile
from pathlib import Path

from benchmarks import readme_block, report, stats

DATE = "2031-05-06T07:08:09+00:00"
META = {"device_type": "cuda", "card": "NVIDIA H100 80GB HBM3", "date": DATE, "torch": "2.11.0+cu130",
        "torch_cuda": "13.0", "cudnn": 91900, "triton": "3.6.0", "commit": "unknown", "baseline": "cudnn",
        "baseline_fp16": "cudnn-fp16", "dtypes": ["bf16"], "command": "python -m benchmarks.run --dtypes bf16"}


def _row(cell, provider, ms, status="ok", dtype="bf16", mode="fw"):
    return {"section": "layer", "case": f"{cell} B=16 T=1024 H=768", "cell": cell, "dtype": dtype, "mode": mode,
            "provider": provider, "provider_dtype": dtype, "median_ms": ms, "min_ms": ms, "max_ms": ms,
            "status": status, "note": "", "max_rel_err": 1e-3, "tokens": 16384,
            "tokens_per_s": stats.tokens_per_s(16384, ms), "anchor_ms": 18.39, "best_anchor_ms": 2.31}


def _fetched(tmp_path: Path, meta=META, failing_test=True) -> Path:
    src = tmp_path / "out"
    src.mkdir()
    rows = [_row("lstm", "cudnn", 18.0), _row("lstm", "fusedrnn-cuda", 2.0), _row("lstm", "fusedrnn-triton", 3.0),
            _row("gru", "cudnn", 14.0), _row("gru", "fusedrnn-cuda", None, status="WRONG"),
            _row("gru", "fusedrnn-triton", 7.0)]
    stats.attach_speedups(rows)
    (src / "results-bf16.json").write_text(report.to_json(rows, stats.summary(rows), meta))
    (src / "summary.md").write_text("# fusedrnn device check: exit code 12: wrong results\n")
    (src / "device_check.log").write_text("log\n")
    (src / "calibration.json").write_text('{"schema": 1, "meaningful": true, "constants": {"launch_us": 4.1}}\n')
    case = ('<testcase classname="tests.gpu.test_triton_gpu" name="test_anchor_shapes[16-1024-768-lstm-torch.bfloat16]" '
            'file="tests/gpu/test_triton_gpu.py"><failure message="AssertionError: y: error 0.2 &gt; tol 0.01"/></testcase>'
            if failing_test else "")
    (src / "junit.xml").write_text(f'<testsuites><testsuite name="pytest"><testcase classname="a" name="b" '
                                   f'file="tests/gpu/a.py"/>{case}</testsuite></testsuites>')
    state = {"exit_code": 12, "exit_meaning": "wrong results", "commit": "0123456789abcdef",
             "junit": {"tests": 2, "passed": 1, "failed": 1, "errors": 0, "skipped": 0},
             "stages": [{"name": "env", "status": "ok", "seconds": 3, "counts": ""}],
             "smoke": [{"id": "cuda/step/rnn_relu", "status": "CRASH"}, {"id": "cuda/step/lstm", "status": "ok"}],
             "memcheck": []}
    with tarfile.open(src / "artifacts.tar.gz", "w:gz") as tar:
        data = json.dumps(state).encode()
        info = tarfile.TarInfo("device_check.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return src


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    (repo / "README.md").write_text(f"# title\n\nbefore\n\n{readme_block.BEGIN}\nold block\n{readme_block.END}\n\nafter\n")
    return repo
