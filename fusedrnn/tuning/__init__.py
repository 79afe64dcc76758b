"""Per-card dispatch tables: which backend `"auto"` runs on a GPU, from measured results.

A table is `fusedrnn/tuning/<card>.json`, where <card> is the GPU's name as
`torch.cuda.get_device_name` reports it, lowercased, with every run of other characters
than a-z and 0-9 turned into one "-" (an H100 SXM: `nvidia-h100-80gb-hbm3.json`). It is
written by `python -m benchmarks.record` from the benchmark results recorded for that card,
counting only rows whose correctness verdict passed, and ships inside the package. The
folder named by the environment variable FUSEDRNN_TUNING_DIR is searched first, so a table
measured on your own card can be used without reinstalling.

A call falls into a *shape class*: its cell, dtype, mode ("fw": no autograd; "fwbw": autograd
records it), kind ("step": one time step — a cell, or a T=1 module call; "sequence": T > 1),
batch class and hidden-size class (edges below). Each table entry is one class measured on
the card, with the backends ranked fastest first ("torch" — torch.nn, cuDNN — always among
them). `"auto"` runs the first backend of the ranking that can run the call; a class the card
was not measured in takes the nearest measured class of the same cell, dtype, mode and kind
(distance: the number of class steps in batch plus in hidden size); with no such entry, or
no table for the card, `"auto"` follows the heuristic of fusedrnn.backends (cuda, then triton,
then torch). An "rnn_relu" call uses "rnn_tanh" entries when the table has none of its own.
`fusedrnn.explain` names the table and entry that decided. A file is checked whole when it
is loaded (schema.py); one malformed in any part warns once and counts as no table.
"""
from __future__ import annotations

import bisect
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import schema
from .. import settings

FORMAT = 1
TABLE_DIR = Path(__file__).resolve().parent
ENV_VAR = "FUSEDRNN_TUNING_DIR"
#: batch classes: B=1, 2..8, 9..32, 33..128, > 128
BATCH_EDGES = (1, 8, 32, 128)
#: hidden-size classes: H <= 128, 129..256, 257..512, 513..768, 769..1024, > 1024
HIDDEN_EDGES = (128, 256, 512, 768, 1024)
KINDS = ("step", "sequence")
MODES = ("fw", "fwbw")
BACKENDS = ("cuda", "triton", "torch")
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def card_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def card_name(device: torch.device) -> str | None:
    """The GPU's name, None where torch cannot tell (tests replace this to fake a card)."""
    try:
        return torch.cuda.get_device_name(device)
    except (AssertionError, RuntimeError):  # a torch without CUDA, no such device
        return None


def batch_class(batch: int) -> int:
    return bisect.bisect_left(BATCH_EDGES, batch)


def hidden_class(hidden: int) -> int:
    return bisect.bisect_left(HIDDEN_EDGES, hidden)


def kind_of(steps: int | None) -> str | None:
    return None if steps is None else ("step" if steps == 1 else "sequence")


def _range(edges, i: int, name: str) -> str:
    lo = edges[i - 1] + 1 if i > 0 else 1
    if i == len(edges):
        return f"{name}>{edges[-1]}"
    hi = edges[i]
    return f"{name}={hi}" if lo == hi else f"{name} {lo}..{hi}"


def class_label(kind: str, b_class: int, h_class: int) -> str:
    return f"{kind} {_range(BATCH_EDGES, b_class, 'B')} {_range(HIDDEN_EDGES, h_class, 'H')}"


@dataclass(frozen=True)
class Entry:
    cell: str
    dtype: str
    mode: str
    kind: str
    batch_class: int
    hidden_class: int
    ranking: tuple          # backend names, fastest first; "torch" among them
    measured: tuple = ()    # per measured shape: {"case": label, "ms": {backend: median ms}}

    @property
    def label(self) -> str:
        return f"{self.cell} {self.dtype} {self.mode} {class_label(self.kind, self.batch_class, self.hidden_class)}"

    def evidence(self) -> str:
        parts = []
        for m in self.measured[:3]:
            times = ", ".join(f"{b} {ms:.4g} ms" for b, ms in sorted(m["ms"].items(), key=lambda kv: kv[1]))
            parts.append(f"{m['case']}: {times}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Hit:
    table: "Table"
    entry: Entry
    exact: bool

    def reason(self, picked: str, passed_over: dict) -> str:
        where = "entry" if self.exact else "nearest measured entry"
        text = (f"the dispatch table {self.table.path.name} ({self.table.card}), {where} "
                f"'{self.entry.label}', ranks {' > '.join(self.entry.ranking)}")
        if passed_over:
            text += " (" + "; ".join(f"{b} passed over: {why}" for b, why in passed_over.items()) + ")"
        text += f", so 'auto' runs {picked}"
        evidence = self.entry.evidence()
        return text + (f" [measured: {evidence}]" if evidence else "")


@dataclass
class Table:
    card: str
    path: Path
    entries: list = field(default_factory=list)
    source: str = ""

    def lookup(self, cell: str, dtype: torch.dtype, mode: str, steps: int | None, batch: int | None,
               hidden: int | None) -> Hit | None:
        """The entry deciding a call (None: the table has nothing for its cell, dtype, mode and
        kind). `steps`, `batch`, `hidden` may be None (unknown, e.g. a dynamic size under
        torch.compile): that dimension is then not compared."""
        name = DTYPE_NAMES.get(dtype)
        kind = kind_of(steps)
        for c in ((cell, "rnn_tanh") if cell == "rnn_relu" else (cell,)):
            same = [e for e in self.entries if e.cell == c and e.dtype == name and e.mode == mode
                    and (kind is None or e.kind == kind)]
            if same:
                break
        if not same:
            return None
        bc = batch_class(batch) if batch is not None else None
        hc = hidden_class(hidden) if hidden is not None else None

        def distance(e: Entry):
            db = abs(e.batch_class - bc) if bc is not None else 0
            dh = abs(e.hidden_class - hc) if hc is not None else 0
            return db + dh, db, e.batch_class, e.hidden_class, KINDS.index(e.kind)
        best = min(same, key=distance)
        exact = distance(best)[0] == 0 and None not in (bc, hc, kind)
        return Hit(self, best, exact)


def _entry(raw: dict) -> Entry:
    return Entry(raw["cell"], raw["dtype"], raw["mode"], raw["kind"], raw["batch_class"], raw["hidden_class"],
                 tuple(raw["ranking"]), tuple(raw.get("measured", ())))


def load(path: Path) -> Table:
    """Read one table file and check it whole (schema.py); ValueError naming the file if it is
    malformed in any part, so that no later lookup or explanation can fail on it."""
    from ..ops.common import CELLS  # noqa: PLC0415  (fusedrnn.ops imports this package)
    try:
        raw = schema.parse(Path(path).read_text())
        schema.check_table(raw, FORMAT, cells=CELLS, dtypes=tuple(DTYPE_NAMES.values()), modes=MODES, kinds=KINDS,
                           backends=BACKENDS, batch_classes=len(BATCH_EDGES) + 1,
                           hidden_classes=len(HIDDEN_EDGES) + 1)
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"fusedrnn dispatch table {path} cannot be used: {e}") from e
    return Table(raw.get("card", ""), Path(path), [_entry(e) for e in raw["entries"]], raw.get("source", ""))


def search_dirs() -> list[Path]:
    extra = settings.get(ENV_VAR)
    return ([Path(extra)] if extra else []) + [TABLE_DIR]


_cache: dict = {}
_slugs: dict = {}


def table_for(device: torch.device) -> Table | None:
    """The dispatch table of `device`'s card, or None if there is none (loaded once per
    card and search path; a malformed file warns once and counts as none)."""
    index = device.index
    if index is None:
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
    if index not in _slugs:
        name = card_name(device)
        _slugs[index] = card_slug(name) if name else None
    slug = _slugs[index]
    if slug is None:
        return None
    dirs = tuple(search_dirs())
    key = (dirs, slug)
    if key not in _cache:
        _cache[key] = None
        for d in dirs:
            path = d / f"{slug}.json"
            if path.is_file():
                try:
                    _cache[key] = load(path)
                except ValueError as e:
                    warnings.warn(str(e) + "; 'auto' follows its heuristic instead", RuntimeWarning, stacklevel=2)
                break
    return _cache[key]


def clear_cache() -> None:
    """Forget loaded tables and card names (after a table file changed, or in tests)."""
    _cache.clear()
    _slugs.clear()
