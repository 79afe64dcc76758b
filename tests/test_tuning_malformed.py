"""A malformed dispatch table (fusedrnn/tuning) in any part warns once and counts as no table:
'auto' follows its heuristic, and neither a call's backend choice nor fusedrnn.explain raises.
The card is faked as in test_tuning.py; explain gets a fake CUDA tensor (no GPU needed)."""
import copy
import json
import warnings

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import fusedrnn
from benchmarks import tuning_table
from fusedrnn import backends, tuning
from support.tuning import CARD, CUDA, row

CASE = "lstm B=16 T=1024 H=768"
GOOD = tuning_table.build([row(CASE, "cudnn", 2.0), row(CASE, "fusedrnn-triton", 1.0)], CARD, ["synthetic"])


def _mutated(change):
    table = copy.deepcopy(GOOD)
    change(table, table["entries"][0])
    return json.dumps(table)  # float("inf") is written as Infinity, as a hand-edited file may hold


MALFORMED = {
    "top-level list": "[" + json.dumps(GOOD) + "]",
    "top-level number": "1",
    "Infinity batch class": _mutated(lambda t, e: e.update(batch_class=float("inf"))),
    "Infinity ms": _mutated(lambda t, e: e["measured"][0]["ms"].update(torch=float("inf"))),
    "NaN ms": _mutated(lambda t, e: e["measured"][0]["ms"].update(torch=float("nan"))),
    "deep nesting": '{"format": 1, "entries": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "measured without ms": _mutated(lambda t, e: e["measured"][0].pop("ms")),
    "non-number ms": _mutated(lambda t, e: e["measured"][0]["ms"].update(torch="fast")),
    "measured entry not an object": _mutated(lambda t, e: e["measured"].append("x")),
    "ranking a string": _mutated(lambda t, e: e.update(ranking="torch")),
    "batch class a string": _mutated(lambda t, e: e.update(batch_class="1")),
    "hidden class out of range": _mutated(lambda t, e: e.update(hidden_class=99)),
    "entries an object": _mutated(lambda t, e: t.update(entries={"0": e})),
    "card a list": _mutated(lambda t, e: t.update(card=[CARD])),
    "not UTF-8": b"\xff\xfe{".decode("latin-1"),
}


def _explain():
    with FakeTensorMode():
        x = torch.empty(1024, 16, 768, dtype=torch.float16, device="cuda")
    return fusedrnn.explain(fusedrnn.LSTM(768, 768).half().requires_grad_(False), x)  # mode "fw"


def test_the_well_formed_table_is_followed(fake_card, monkeypatch):
    monkeypatch.setattr(backends, "why_not", lambda name, *a, **k: "not built" if name == "cuda" else None)
    fake_card.write_text(json.dumps(GOOD))
    c = backends.choose("auto", CUDA, "lstm", torch.float16, 768, batch=16, steps=1024)
    assert c.name == "triton" and "ranks triton > torch" in c.reason and "torch 2 ms" in c.reason
    assert "ranks triton > torch" in _explain()


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_table_warns_once_and_counts_as_none(fake_card, monkeypatch, name):
    monkeypatch.setattr(backends, "why_not", lambda name, *a, **k: "not built" if name == "cuda" else None)
    text = MALFORMED[name]
    fake_card.write_bytes(text.encode("latin-1") if name == "not UTF-8" else text.encode())
    with pytest.warns(RuntimeWarning, match="dispatch table .* cannot be used") as caught:
        c = backends.choose("auto", CUDA, "lstm", torch.float16, 768, batch=16, steps=1024)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert c.name == "triton" and "no dispatch table" in c.reason and "heuristic" in c.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the second call and explain warn no more
        assert backends.choose("auto", CUDA, "lstm", torch.float16, 768, batch=16, steps=1, grad=True).name == "triton"
        text = _explain()
    assert "would run backend 'triton'" in text and "no dispatch table" in text
    with pytest.raises(ValueError, match="cannot be used"):
        tuning.load(fake_card)
