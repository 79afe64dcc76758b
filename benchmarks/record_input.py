"""What `python -m benchmarks.record` accepts from a fetched device-check folder: every
results-<dtype>.json read and checked before anything is written, so that a malformed or
hostile folder ends in one line naming the file and the fault (exit code MALFORMED), never a
traceback or a file written elsewhere."""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from . import meta as M
from . import junit

#: record's exit code for a results folder it cannot file (2 stays argparse's: bad usage)
MALFORMED = 3

#: the row fields the filing code reads as text, and those it reads as a number or None
ROW_TEXT = ("section", "case", "cell", "dtype", "mode", "provider", "status")
ROW_NUMBERS = ("median_ms", "min_ms", "max_ms", "max_rel_err", "tokens_per_s", "anchor_ms", "best_anchor_ms",
               "speedup_vs_baseline", "speedup_vs_fp16", "vs_anchor", "vs_best_anchor")


class Malformed(Exception):
    """A fetched folder that cannot be filed; the message is one line."""


def _number_or_none(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v))


def check_row(row, where: str) -> dict:
    """The row with every numeric field the filing code reads (None where the run left it
    out); Malformed if a field is missing or of the wrong kind."""
    if not isinstance(row, dict):
        raise Malformed(f"{where} is a {type(row).__name__}, not an object")
    for key in ROW_TEXT:
        if not isinstance(row.get(key), str):
            raise Malformed(f"{where} has no text field {key!r}" if key not in row else
                            f"{where}: {key!r} is {row[key]!r}, not text")
    if "median_ms" not in row:
        raise Malformed(f"{where} has no 'median_ms'")
    for key in ROW_NUMBERS:
        if not _number_or_none(row.get(key)):
            raise Malformed(f"{where}: {key!r} is {row[key]!r}, not a number or null")
    return {**{k: None for k in ROW_NUMBERS}, **row}


def check_meta(meta, where: str) -> dict:
    if not isinstance(meta, dict):
        raise Malformed(f"{where} has no 'meta' object")
    if not isinstance(meta.get("device_type"), str):
        raise Malformed(f"{where}: meta 'device_type' is {meta.get('device_type')!r}, not text")
    dtypes = meta.get("dtypes", [])
    if not isinstance(dtypes, list) or not all(isinstance(d, str) for d in dtypes):
        raise Malformed(f"{where}: meta 'dtypes' is {dtypes!r}, not a list of names")
    try:
        M.run_time(meta)  # the card is checked where it names the folder (meta.default_out_dir)
    except ValueError as e:
        raise Malformed(f"{where}: {e}") from None
    return meta


def read_results(path: Path) -> tuple[dict, list[dict]]:
    """(meta, rows) of one results file, checked."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise Malformed(f"{path} is not readable JSON: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    if not isinstance(data, dict):
        raise Malformed(f"{path} holds a {type(data).__name__}, not a results object")
    meta = check_meta(data.get("meta"), str(path))
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise Malformed(f"{path}: 'rows' is {'missing' if rows is None else 'a ' + type(rows).__name__}, not a list")
    return meta, [check_row(r, f"{path}, rows[{i}]") for i, r in enumerate(rows)]


def junit_failures(path: Path) -> list:
    """The failures of the check's junit.xml; Malformed if it does not parse."""
    try:
        return junit.parse_junit(path).failures
    except (OSError, ET.ParseError) as e:
        raise Malformed(f"{path} is not readable JUnit XML: {e}") from None


def objects(value) -> list[dict]:
    """The objects of a list in device_check.json (anything else there counts as none)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
