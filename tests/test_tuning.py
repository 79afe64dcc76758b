"""The per-card dispatch table of backend="auto": built from benchmark rows (only verified ones),
written by benchmarks.record, followed by backends.choose on a card that has one (the card's
name faked, the table synthetic: these timings are made-up inputs, not measurements), the
heuristic elsewhere, and the shape a module or cell call reports to it."""
import json

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from benchmarks import tuning_table
from fusedrnn import backends, tuning
from support.bench_record import _fetched, _repo
from support.tuning import CARD, CUDA, row, write_table


def test_entries_rank_verified_backends_by_their_time_relative_to_torch():
    rows = [row("a", "cudnn", 2.0), row("a", "fusedrnn-cuda", 1.0), row("a", "fusedrnn-triton", 1.5),
            # another shape of the same class (B 9..32, H 513..768): triton missing there, so it cannot compete
            row("b", "cudnn", 4.0, B=20), row("b", "fusedrnn-cuda", 3.0, B=20),
            # a wrong, an unverified and a graph-captured row never count; nor cudnn-fp16 in an fp32 run
            row("c", "cudnn", 1.0, B=1, H=256), row("c", "fusedrnn-cuda", 0.1, B=1, H=256, verdict="WRONG"),
            row("c", "fusedrnn-triton", 0.2, B=1, H=256, verdict="unverified: a failing test"),
            row("c", "fusedrnn-cuda", 0.01, B=1, H=256, graph=True),
            row("d", "cudnn-fp16", 0.5, dtype="fp32", provider_dtype="fp16"),
            row("d", "fusedrnn-cuda", 0.9, dtype="fp32"),
            # no torch.nn time: no entry
            row("e", "fusedrnn-cuda", 0.9, dtype="bf16")]
    got = {(e["dtype"], e["class"]): e for e in tuning_table.entries(rows)}
    assert set(got) == {("fp16", "sequence B 9..32 H 513..768"), ("fp16", "sequence B=1 H 129..256")}
    a = got["fp16", "sequence B 9..32 H 513..768"]
    assert a["ranking"] == ["cuda", "torch"]
    assert a["ratio_to_torch"]["cuda"] == pytest.approx((0.5 * 0.75) ** 0.5, rel=1e-3)
    assert [m["case"] for m in a["measured"]] == ["a", "b"]
    assert got["fp16", "sequence B=1 H 129..256"]["ranking"] == ["torch"]


def test_torch_wins_a_tie_and_steps_are_their_own_kind():
    rows = [row("s", "cudnn", 0.1, T=1, B=1, H=1024), row("s", "fusedrnn-cuda", 0.1, T=1, B=1, H=1024)]
    (e,) = tuning_table.entries(rows)
    assert e["kind"] == "step" and e["ranking"] == ["torch", "cuda"]


def test_auto_follows_the_cards_table(fake_card):
    case = "lstm B=16 T=1024 H=768"
    write_table(fake_card, [row(case, "cudnn", 2.3), row(case, "fusedrnn-cuda", 3.0), row(case, "fusedrnn-triton", 1.9),
                            row("decode", "cudnn", 0.15, T=1, B=1, H=1024),
                            row("decode", "fusedrnn-cuda", 0.03, T=1, B=1, H=1024)])
    exact = backends.choose("auto", CUDA, "lstm", torch.float16, 768, batch=16, steps=1024)
    assert exact.name == "triton"
    assert "nvidia-fake-gpu-9000.json" in exact.reason
    assert "entry 'lstm fp16 fw sequence B 9..32 H 513..768'" in exact.reason
    assert "ranks triton > torch > cuda" in exact.reason and "triton 1.9 ms" in exact.reason
    # another class of the same kind: the nearest measured entry decides, and says so
    near = backends.choose("auto", CUDA, "lstm", torch.float16, 1024, batch=64, steps=256)
    assert near.name == "triton" and "nearest measured entry" in near.reason
    # one step (a cell, a T=1 call): the decode entry
    assert backends.choose("auto", CUDA, "lstm", torch.float16, 1024, batch=1, steps=1).name == "cuda"
    assert backends.choose_name("auto", CUDA, "lstm", torch.float16, 1024, 0, 1, 1, False) == "cuda"
    # nothing measured for this cell, dtype or mode: the heuristic, and the reason says why
    for args in [("gru", torch.float16, False), ("lstm", torch.float32, False), ("lstm", torch.float16, True)]:
        c = backends.choose("auto", CUDA, args[0], args[1], 768, batch=16, steps=1024, grad=args[2])
        assert c.name == "cuda" and "has no entry" in c.reason and "heuristic" in c.reason
    # an explicit backend is never overridden by the table
    assert backends.choose("cuda", CUDA, "lstm", torch.float16, 768, batch=16, steps=1024).name == "cuda"


def test_a_ranked_backend_that_cannot_run_is_passed_over(fake_card, monkeypatch):
    write_table(fake_card, [row("x", "cudnn", 2.0), row("x", "fusedrnn-cuda", 1.0), row("x", "fusedrnn-triton", 1.5)])
    monkeypatch.setattr(backends, "why_not", lambda name, *a, **k: "not built" if name == "cuda" else None)
    c = backends.choose("auto", CUDA, "lstm", torch.float16, 768, batch=16, steps=1024)
    assert c.name == "triton" and "cuda passed over: not built" in c.reason
    monkeypatch.setattr(backends, "why_not", lambda name, *a, **k: None if name == "torch" else "no")
    assert backends.choose("auto", CUDA, "lstm", torch.float16, 768, batch=16, steps=1024).name == "torch"


def test_rnn_relu_uses_rnn_tanh_entries_and_unknown_sizes_are_not_compared(fake_card):
    write_table(fake_card, [row("r", "cudnn", 1.0, cell="rnn_tanh", B=1, H=256),
                            row("r", "fusedrnn-triton", 0.5, cell="rnn_tanh", B=1, H=256),
                            row("q", "cudnn", 1.0, cell="rnn_tanh", B=256, H=512),
                            row("q", "fusedrnn-cuda", 0.5, cell="rnn_tanh", B=256, H=512)])
    assert backends.choose("auto", CUDA, "rnn_relu", torch.float16, 256, batch=1, steps=9).name == "triton"
    # a dynamic batch and length under torch.compile: read by hidden size alone
    assert backends.choose("auto", CUDA, "rnn_tanh", torch.float16, 512).name == "cuda"


def test_no_table_or_a_malformed_one_means_the_heuristic(fake_card):
    c = backends.choose("auto", CUDA, "lstm", torch.float16, 768, batch=16, steps=1024)
    assert c.name == "cuda" and f"no dispatch table for this card ({CARD})" in c.reason
    fake_card.write_text('{"format": 1, "entries": [{"cell": "lstm"}]}')
    tuning.clear_cache()
    with pytest.warns(RuntimeWarning, match="cannot be used"):
        c = backends.choose("auto", CUDA, "lstm", torch.float16, 768, batch=16, steps=1024)
    assert c.name == "cuda" and "no dispatch table" in c.reason
    assert "(no dispatch table for this card)" in fusedrnn.available_backends()["auto"][1] or \
        not torch.cuda.is_available()


def test_record_writes_the_table_of_the_card_it_files(tmp_path, monkeypatch):
    from benchmarks import record  # noqa: PLC0415
    src, repo = _fetched(tmp_path), _repo(tmp_path)
    results = src / "results-bf16.json"
    data = json.loads(results.read_text())
    for r in data["rows"]:
        r.update(B=16, T=1024, H=768)  # the layer anchor its case label names
    results.write_text(json.dumps(data))
    assert record.main([str(src), "--repo", str(repo), "--no-readme"]) == 0
    path = repo / "fusedrnn" / "tuning" / "nvidia-h100-80gb-hbm3.json"
    table = tuning.load(path)
    assert table.card == "NVIDIA H100 80GB HBM3"
    assert "benchmarks/results/2031-05-06-nvidia-h100-80gb-hbm3" in table.source
    # the fixture's failing Triton LSTM bf16 test and WRONG cuda GRU row do not count
    rank = {e.cell: e.ranking for e in table.entries}
    assert rank == {"lstm": ("cuda", "torch"), "gru": ("triton", "torch")}
    path.unlink()
    assert record.main([str(src), "--repo", str(repo), "--no-readme", "--no-tuning"]) == 0
    assert not path.exists()
    assert tuning_table.main(["--repo", str(repo)]) == 0 and path.exists()  # rebuilt from the records


# -- the shape a call reports to the choice ----------------------------------------------

@pytest.fixture
def asked(monkeypatch):
    seen = []
    real = backends.choose_name

    def spy(*args):
        seen.append(args[6:9])  # batch, steps, grad (modules also pass directions after them)
        return real(*args)
    monkeypatch.setattr(backends, "choose_name", spy)
    return seen


def test_modules_and_cells_report_batch_steps_and_grad(asked):
    lstm = fusedrnn.LSTM(3, 4, batch_first=True, backend="reference")
    lstm(torch.randn(2, 5, 3))
    with torch.no_grad():
        fusedrnn.GRU(3, 4, backend="reference")(torch.randn(6, 7, 3))
        fusedrnn.GRU(3, 4, backend="reference")(torch.randn(6, 3))  # unbatched
    packed = pack_padded_sequence(torch.randn(4, 3, 3), torch.tensor([4, 2, 1]))
    lstm(packed)
    fusedrnn.LSTMCell(3, 4, backend="reference")(torch.randn(5, 3))
    cell = fusedrnn.GRUCell(3, 4, backend="reference").requires_grad_(False)
    cell(torch.randn(3))
    cell(torch.randn(3), torch.zeros(4, requires_grad=True))
    assert asked == [(2, 5, True), (7, 6, False), (1, 6, False), (3, 4, True), (5, 1, True), (1, 1, False),
                     (1, 1, True)]
