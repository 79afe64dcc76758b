"""A fake card with a dispatch table, and table rows, for the tuning tests."""
import json

import pytest
import torch

from fusedrnn import backends, tuning

CARD = "NVIDIA Fake GPU 9000"
CUDA = torch.device("cuda", 0)


def row(case, provider, ms, cell="lstm", dtype="fp16", mode="fw", B=16, T=1024, H=768, verdict=None, **kw):
    base = {"case": case, "cell": cell, "dtype": dtype, "mode": mode, "B": B, "T": T, "H": H, "provider": provider,
            "provider_dtype": kw.pop("provider_dtype", dtype), "median_ms": ms, "decode": T == 1}
    base["verdict"] = verdict or ("baseline" if provider.startswith("cudnn") else "ok")
    return {**base, **kw}


@pytest.fixture
def fake_card(monkeypatch, tmp_path):
    """A CUDA 'device' named CARD whose table is looked up in tmp_path; every backend available."""
    monkeypatch.setattr(tuning, "card_name", lambda device: CARD)
    monkeypatch.setenv(tuning.ENV_VAR, str(tmp_path))
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    monkeypatch.setattr(backends, "why_not", lambda name, *a, **k: None)
    tuning.clear_cache()
    yield tmp_path / f"{tuning.card_slug(CARD)}.json"
    tuning.clear_cache()


def write_table(path, rows):
    from benchmarks import tuning_table  # here, not at import: tests/conftest.py imports this module
    path.write_text(json.dumps(tuning_table.build(rows, CARD, ["synthetic"])))
