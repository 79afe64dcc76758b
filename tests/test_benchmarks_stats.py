"""The suite's arithmetic on fixed timings: summaries, tokens/s, speedups, geometric means,
the published-anchor lookup, and the report built from them."""
import json
import math

import pytest
import torch

from benchmarks import anchors, plot, report, stats
from benchmarks.model_cases import decode_cases, encoder_cases
from benchmarks.shapes import Case


def test_summarize_median_min_max():
    s = stats.summarize([3.0, 1.0, 2.0, 10.0])
    assert s == {"median_ms": 2.5, "min_ms": 1.0, "max_ms": 10.0, "n": 4, "p25_ms": 1.75, "p75_ms": 4.75,
                 "iqr_pct": pytest.approx(120.0)}
    assert stats.summarize([2.0]) == {"median_ms": 2.0, "min_ms": 2.0, "max_ms": 2.0, "n": 1, "p25_ms": 2.0,
                                      "p75_ms": 2.0, "iqr_pct": 0.0}
    assert stats.summarize([4.0, 7.0, 5.0])["median_ms"] == 5.0
    with pytest.raises(ValueError):
        stats.summarize([])


def test_tokens_per_s_and_speedup():
    assert stats.tokens_per_s(16 * 1024, 2.0) == pytest.approx(8_192_000)
    assert stats.tokens_per_s(100, None) is None
    assert stats.speedup(10.0, 4.0) == pytest.approx(2.5)      # t_baseline / t_provider
    assert stats.speedup(4.0, 10.0) == pytest.approx(0.4)
    assert stats.speedup(None, 4.0) is None and stats.speedup(4.0, None) is None


def test_geomean():
    assert stats.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert stats.geomean([1.0, 4.0, 16.0]) == pytest.approx(4.0)
    assert stats.geomean([0.5, 2.0, None]) == pytest.approx(1.0)   # missing speedups are left out
    assert stats.geomean([None]) is None
    with pytest.raises(ValueError):
        stats.geomean([1.0, -2.0])


def _row(case, provider, ms, dtype="bf16", mode="fw", status="ok", anchor=None, best=None):
    return {"section": "layer", "case": case, "dtype": dtype, "mode": mode, "provider": provider,
            "median_ms": ms, "min_ms": ms, "max_ms": ms, "status": status, "note": "", "max_rel_err": 1e-3,
            "tokens": 1000, "tokens_per_s": stats.tokens_per_s(1000, ms), "anchor_ms": anchor, "best_anchor_ms": best}


def fixed_rows():
    return [
        _row("A", "cudnn", 10.0, anchor=12.0, best=5.0), _row("A", "cudnn-fp16", 5.0), _row("A", "fusedrnn-cuda", 2.0, anchor=12.0, best=5.0),
        _row("A", "fusedrnn-triton", None, status="WRONG"),
        _row("B", "cudnn", 3.0), _row("B", "cudnn-fp16", 6.0), _row("B", "fusedrnn-cuda", 6.0),
        _row("B", "fusedrnn-triton", 1.5),
        # an fp16 run has no separate cudnn-fp16 row: its fp16 baseline is cudnn itself
        _row("A", "cudnn", 4.0, dtype="fp16"), _row("A", "fusedrnn-cuda", 1.0, dtype="fp16"),
    ]


def test_attach_speedups_on_fixed_timings():
    rows = stats.attach_speedups(fixed_rows())
    get = {(r["case"], r["provider"], r["dtype"]): r for r in rows}
    a = get["A", "fusedrnn-cuda", "bf16"]
    assert a["speedup_vs_baseline"] == pytest.approx(5.0)        # 10 / 2
    assert a["speedup_vs_fp16"] == pytest.approx(2.5)            # 5 / 2
    assert a["vs_anchor"] == pytest.approx(6.0) and a["vs_best_anchor"] == pytest.approx(2.5)
    assert get["A", "cudnn-fp16", "bf16"]["speedup_vs_baseline"] == pytest.approx(2.0)
    assert get["A", "cudnn", "bf16"]["speedup_vs_baseline"] == pytest.approx(1.0)
    wrong = get["A", "fusedrnn-triton", "bf16"]
    assert wrong["speedup_vs_baseline"] is None and wrong["speedup_vs_fp16"] is None   # never a win
    assert get["B", "fusedrnn-cuda", "bf16"]["speedup_vs_baseline"] == pytest.approx(0.5)
    assert get["B", "fusedrnn-triton", "bf16"]["speedup_vs_fp16"] == pytest.approx(4.0)
    fp16 = get["A", "fusedrnn-cuda", "fp16"]
    assert fp16["speedup_vs_baseline"] == pytest.approx(4.0) and fp16["speedup_vs_fp16"] == pytest.approx(4.0)


def test_summary_geomean_per_provider():
    summary = {(s["provider"], s["dtype"]): s for s in stats.summary(stats.attach_speedups(fixed_rows()))}
    cuda = summary["fusedrnn-cuda", "bf16"]
    assert cuda["geomean_vs_baseline"] == pytest.approx(math.sqrt(5.0 * 0.5))
    assert cuda["geomean_vs_fp16"] == pytest.approx(math.sqrt(2.5 * 1.0))
    assert (cuda["cases"], cuda["timed"], cuda["wrong"]) == (2, 2, 0)
    triton = summary["fusedrnn-triton", "bf16"]
    assert triton["geomean_vs_baseline"] == pytest.approx(2.0)     # only case B was timed: 3 / 1.5
    assert (triton["timed"], triton["wrong"]) == (1, 1)


def test_report_text_markdown_json_agree():
    rows = stats.attach_speedups(fixed_rows())
    summary = stats.summary(rows)
    meta = {"device_type": "cuda", "card": "Test Card", "date": "2030-01-02T03:04:05+00:00",
            "baseline": "cudnn", "baseline_fp16": "cudnn-fp16"}
    text = report.text(rows, summary, meta)
    assert "geometric-mean speedup per provider" in text and "5.00x" in text and "WRONG" in text
    md = report.markdown(rows, summary, meta)
    table_lines = [line for line in md.splitlines() if line.startswith("| A ") or line.startswith("| B ")]
    assert len(table_lines) == len(rows)
    assert "PUBLISHED cuDNN numbers of the anchor shapes (docs/anchors.md" in md
    assert "| vs cudnn |" in md and "cuDNN algorithm" in md
    rows[0]["max_rel_err"] = math.inf
    data = json.loads(report.to_json(rows, summary, meta))
    assert data["rows"][0]["max_rel_err"] == "inf" and data["meta"]["card"] == "Test Card"


def test_cpu_report_shows_spread_and_no_speedup():
    rows = stats.attach_speedups(fixed_rows(), comparable=False)
    assert all(r["speedup_vs_baseline"] is None and r["vs_best_anchor"] is None for r in rows)
    summary = stats.summary(rows)
    assert all(s["geomean_vs_baseline"] is None for s in summary)
    meta = {"device_type": "cpu", "card": "CPU: x", "date": "2030-01-02T03:04:05+00:00", "baseline": "torch-cpu"}
    for text in (report.text(rows, summary, meta), report.markdown(rows, summary, meta)):
        assert "NOT representative" in text and "p25-p75" in text
        assert "vs torch-cpu" not in text and "geomean" not in text and "x |" not in text


def test_published_anchor_lookup():
    lstm = Case("layer", "lstm", "lstm", 16, 1024, 768, 768)
    assert anchors.anchor_ms(lstm, "fp16", "fw") == 2.31
    assert anchors.anchor_ms(lstm, "bf16", "fwbw") == 44.62
    assert anchors.best_anchor_ms(lstm, "fwbw") == 7.23
    assert anchors.anchor_ms(Case("layer", "gru", "gru", 8, 512, 128, 128), "fp32", "fw") == 0.52
    assert anchors.anchor_ms(Case("layer", "lstm", "lstm", 16, 1024, 768, 768, layers=2), "fp16", "fw") is None
    assert anchors.anchor_ms(Case("layer", "lstm", "lstm", 2, 3, 4, 4), "fp32", "fw") is None
    padded, packed = encoder_cases()
    assert anchors.anchor_ms(packed, "fp16", "fwbw") == 74.95 and anchors.anchor_ms(padded, "fp32", "fw") == 44.19
    big, small = decode_cases(variants=(("module", False),))
    assert anchors.anchor_ms(big, "fp32", "fw") == 0.155 and anchors.anchor_ms(small, "fp32", "fw") == 0.159
    assert anchors.anchor_ms(big, "fp16", "fw") is None


def test_plot_draws_speedups_and_marks_wrong(tmp_path):
    rows = stats.attach_speedups(fixed_rows())
    meta = {"device_type": "cuda", "card": "Test Card", "date": "2030-01-02", "baseline": "cudnn"}
    path = plot.plot(rows, meta, tmp_path / "speedup.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    empty = plot.plot([r for r in rows if r["provider"] == "cudnn"], meta, tmp_path / "empty.png")
    assert empty.stat().st_size > 0


def test_cudnn_algorithm_follows_pytorchs_rule():
    from benchmarks import cudnn_algo
    layer = lambda cell, B, H: Case("layer", cell, cell, B, 1024, H, H)  # noqa: E731
    # persistent only for fp16, unpacked, 1 layer, 1 direction, H % 128 == 0, LSTM/RNN with B % 8 == 0, B <= 128
    assert cudnn_algo.expected(layer("lstm", 16, 768), "fp16", "fw") == "persist-static"
    assert cudnn_algo.expected(layer("lstm", 16, 768), "bf16", "fw") == "standard"
    assert cudnn_algo.expected(layer("gru", 16, 768), "fp16", "fw") == "standard"
    assert cudnn_algo.expected(layer("lstm", 256, 512), "fp16", "fw") == "standard"
    assert cudnn_algo.expected(layer("rnn_tanh", 64, 1024), "fp16", "fw") == "persist-static"
    assert cudnn_algo.expected(layer("rnn_tanh", 96, 1024), "fp16", "fw") == "standard"
    assert cudnn_algo.expected(layer("lstm", 16, 768), "fp16", "fw", capability=(8, 6), sms=84) == "standard"
    # small hidden sizes, any dtype: forward RNN H <= 384, LSTM/GRU H <= 192; backward 256 / 128
    assert cudnn_algo.expected(layer("lstm", 8, 128), "fp32", "fwbw") == "persist-static-small-h"
    assert cudnn_algo.expected(layer("lstm", 1, 256), "fp32", "fw") == "standard"
    assert cudnn_algo.expected(layer("rnn_tanh", 1, 256), "fp32", "fwbw") == "persist-static-small-h"
    assert cudnn_algo.expected(layer("gru", 8, 160), "fp16", "fwbw") == "fw persist-static-small-h, bw standard"
    padded, packed = encoder_cases()
    assert cudnn_algo.expected(packed, "fp16", "fw") == "standard"
    assert cudnn_algo.expected(padded, "fp16", "fwbw") == "standard"
    big, small = decode_cases(variants=(("module", False),))
    assert cudnn_algo.expected(big, "fp16", "fw") == cudnn_algo.expected(small, "fp16", "fw") == "standard"
    assert cudnn_algo.observe(lambda: None) == [] or torch.cuda.is_available()   # no profile without a GPU
