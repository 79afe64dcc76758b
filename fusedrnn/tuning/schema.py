"""The shape of a dispatch table file, checked whole when it is loaded: a table that passes
cannot make a lookup or an explanation fail later (a missing `ms`, a string where a number
goes, an infinite time). Any deviation is a ValueError naming where it is."""
from __future__ import annotations

import json
import math


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse(text: str):
    """JSON without NaN/Infinity; ValueError for nesting too deep to parse (json recurses)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deep to be a table") from None


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ValueError(f"{where}: {what}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_time(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def check_measured(m, where: str, backends) -> None:
    _need(isinstance(m, dict), where, "not an object")
    _need(isinstance(m.get("case"), str), where, "'case' is not a string")
    ms = m.get("ms")
    _need(isinstance(ms, dict) and ms, where, "'ms' is not an object of backend times")
    for b, t in ms.items():
        _need(b in backends, where, f"'ms' names unknown backend {b!r}")
        _need(_is_time(t), where, f"'ms' of {b} is {t!r}, not a finite number of milliseconds >= 0")


def check_entry(e, where: str, *, cells, dtypes, modes, kinds, backends, batch_classes: int,
                hidden_classes: int) -> None:
    _need(isinstance(e, dict), where, "not an object")
    for key, allowed in (("cell", cells), ("dtype", dtypes), ("mode", modes), ("kind", kinds)):
        _need(isinstance(e.get(key), str) and e[key] in allowed, where,
              f"{key} {e.get(key)!r} is not one of {', '.join(allowed)}")
    for key, n in (("batch_class", batch_classes), ("hidden_class", hidden_classes)):
        _need(_is_int(e.get(key)) and 0 <= e[key] < n, where, f"{key} {e.get(key)!r} is not an integer in 0..{n - 1}")
    ranking = e.get("ranking")
    _need(isinstance(ranking, list) and all(isinstance(b, str) and b in backends for b in ranking)
          and len(set(ranking)) == len(ranking) and "torch" in ranking, where,
          f"ranking {ranking!r} is not a list of distinct backends of {', '.join(backends)} including 'torch'")
    measured = e.get("measured", [])
    _need(isinstance(measured, list), where, "'measured' is not a list")
    for i, m in enumerate(measured):
        check_measured(m, f"{where}, measured[{i}]", backends)


def check_table(raw, fmt: int, **entry_rules) -> None:
    """ValueError unless `raw` (parsed JSON) is a whole, well-formed table of format `fmt`."""
    _need(isinstance(raw, dict), "table", f"top level is a {type(raw).__name__}, not an object")
    _need(raw.get("format") == fmt and _is_int(raw.get("format")), "table",
          f"format {raw.get('format')!r}, expected {fmt}")
    for key in ("card", "source"):
        _need(isinstance(raw.get(key, ""), str), "table", f"{key!r} is not a string")
    entries = raw.get("entries")
    _need(isinstance(entries, list), "table", "'entries' is not a list")
    for i, e in enumerate(entries):
        check_entry(e, f"entries[{i}]", **entry_rules)
