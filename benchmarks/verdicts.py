"""Which benchmark rows a device check vouches for. A fused row counts (may be a speedup)
only if its own float64 check passed AND no failing test, smoke kernel or memcheck run
touches its backend, cell and dtype. A failure that names no backend, cell or dtype
taints every one it could be about: a wrong result is never counted as a win."""
from __future__ import annotations

import re

BACKENDS = ("cuda", "triton")
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DTYPE_TOKENS = {"fp32": "fp32", "float32": "fp32", "float": "fp32", "bf16": "bf16", "bfloat16": "bf16",
                "fp16": "fp16", "float16": "fp16", "half": "fp16"}


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[\[\]\-/:.,\s()=]+", text.lower()) if t]


def scope(text: str) -> tuple[set, set, set]:
    """(backends, cells, dtypes) a failure's id is about; an empty part means 'all'."""
    toks = _tokens(text)
    params = _tokens(text.partition("[")[2])
    backends = {b for b in BACKENDS if b in params} or \
        {b for b in BACKENDS if b in toks or any(t.startswith(f"test_{b}") for t in toks)}
    cells = {c for c in CELLS if c in toks}
    dtypes = {DTYPE_TOKENS[t] for t in toks if t in DTYPE_TOKENS}
    return backends, cells, dtypes


def taints(failures) -> list[tuple[set, set, set, str]]:
    """failures: iterable of (id, why). Each becomes (backends, cells, dtypes, why)."""
    return [(*scope(fid), f"{fid}: {why}") for fid, why in failures]


def _hits(part: set, value: str) -> bool:
    return not part or value in part


def judge(row: dict, tainted) -> str:
    """'baseline', 'WRONG', 'not timed', 'unverified: why' or 'ok'."""
    provider = row["provider"]
    if not provider.startswith("fusedrnn-") or provider == "fusedrnn-reference":
        return "baseline" if row["status"] == "ok" else row["status"]
    if row["status"] == "WRONG":
        return "WRONG"
    if row.get("median_ms") is None:
        return "not timed"
    backend = provider.split("-", 1)[1]
    dtype = row.get("provider_dtype") or row["dtype"]
    for backends, cells, dtypes, why in tainted:
        if _hits(backends, backend) and _hits(cells, row["cell"]) and _hits(dtypes, dtype):
            return f"unverified: {why}"[:300]
    return "ok"


def apply(rows: list[dict], tainted) -> list[dict]:
    """Set each row's `verdict`; a fused row that is not 'ok' loses every speedup."""
    for r in rows:
        r["verdict"] = judge(r, tainted)
        if r["provider"].startswith("fusedrnn-") and r["verdict"] != "ok":
            r.update(speedup_vs_baseline=None, speedup_vs_fp16=None, vs_anchor=None, vs_best_anchor=None)
    return rows
