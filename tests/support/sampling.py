"""The default run samples the long parametrisations; the compile gates' run (`--gates`) runs
the cases the sample left out, so the two runs CI makes (.ci/run) hold every case between
them; `FUSEDRNN_FULL_TESTS=1` (`scripts/test.sh --full`) runs every case in one run.

A test marked `@pytest.mark.sampled` (or a file with `pytestmark = pytest.mark.sampled`) keeps,
of its parametrised cases, a covering sample: a few cases that together hold every value of
every parameter (greedy set cover: the case bringing the most values not yet covered, the
earliest on a tie). So every cell, dtype, tier, layout and awkward size a test is
parametrised over still runs at least once, and the same cases are kept on every run (no
randomness: the choice depends only on the collected cases and their order). A value that
is a named tuple or a plain tuple counts field by field (a contract case's cell, direction,
lengths, ...), so a one-argument parametrisation over cases is sampled too.

A test (or parametrised case) marked `@pytest.mark.full_only` runs in the full run only: for
checks whose every case is expensive, such as compiling a pipelined kernel for sm_90, where
the default run keeps a named representative subset instead of a covering sample.

The cases left out are deselected, never skipped: pytest's summary counts them as
"deselected", this plugin prints how many per test and writes the kept and left-out node ids
to build/test-sample.txt. Of a behaviour test (not marked `gate`, tests/support/tiers.py),
`pytest --gates` runs exactly the cases the default run left out (the same sample, taken of
the same collected cases); of a compile gate, it keeps a sample the same way, and only the full
run compiles every case.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

from support import workers

FULL_ENV = "FUSEDRNN_FULL_TESTS"
ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "build" / "test-sample.txt"


def full_run() -> bool:
    return os.environ.get(FULL_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _facets(name: str, value) -> list[tuple]:
    """The parameter values a case stands for: (argument, field, value-key) triples."""
    fields = getattr(value, "_fields", None)
    if fields is not None:  # a named tuple: field by field
        return [(name, f, _key(getattr(value, f))) for f in fields]
    if isinstance(value, tuple) and not isinstance(value, str):
        return [(name, i, _key(v)) for i, v in enumerate(value)]
    return [(name, None, _key(value))]


def _key(value):
    try:
        hash(value)
        return (type(value).__name__, value)
    except TypeError:
        return (type(value).__name__, repr(value))


def covering_sample(items) -> list:
    """A small set of items that together have every facet: greedy set cover (take the item
    bringing the most facets not yet covered, the earliest on a tie), in collection order."""
    facets = [{f for name, value in i.callspec.params.items() for f in _facets(name, value)} for i in items]
    missing, chosen = set().union(*facets) if facets else set(), set()
    while missing:
        best = max(range(len(items)), key=lambda k: (len(facets[k] & missing), -k))
        chosen.add(best)
        missing -= facets[best]
    return [items[k] for k in sorted(chosen)]


def pytest_configure(config):
    config.addinivalue_line("markers", "sampled: the default run keeps a covering sample of this test's "
                                       f"parametrised cases ({FULL_ENV}=1 runs all; tests/support/sampling.py)")
    config.addinivalue_line("markers", "full_only: runs only in the full run "
                                       f"({FULL_ENV}=1; tests/support/sampling.py)")
    config._fusedrnn_sampled = {}


_LEFT_TO = {False: "`pytest --gates` runs those of behaviour tests, FUSEDRNN_FULL_TESTS=1 every case",
            True: "FUSEDRNN_FULL_TESTS=1 runs them"}


def _tiers():
    """tests/support/tiers.py, imported when first needed: imported here at load time it would be
    imported before pytest registers it as a plugin (and so without assertion rewriting)."""
    from support import tiers  # noqa: PLC0415
    return tiers


def _report(config) -> Path:
    """Where this run lists the cases it kept and left out (the gates' run its own file)."""
    return REPORT.with_name(REPORT.stem + "-gates" + REPORT.suffix) if _tiers().gates_run(config) else REPORT


def _kept(group: list) -> list:
    """The cases of one test that a sampled run keeps: a covering sample of its `sampled`
    cases, none of its `full_only` ones, every other case."""
    kept = [i for i in group if i.get_closest_marker("full_only") is None]
    sampled = [i for i in kept if i.get_closest_marker("sampled") is not None and hasattr(i, "callspec")]
    if sampled:
        out = {id(i) for i in sampled} - {id(i) for i in covering_sample(sampled)}
        kept = [i for i in kept if id(i) not in out]
    return kept


@pytest.hookimpl(trylast=True)  # after -k and -m: the sample is taken of what was asked for
def pytest_collection_modifyitems(config, items):
    if full_run():
        return
    gates_run = _tiers().gates_run(config)
    groups = defaultdict(list)
    for item in items:
        groups[(item.path, item.originalname)].append(item)
    left_out, rest, ran_by_default = [], {}, []
    for (path, name), group in groups.items():
        marked = [i for i in group if i.get_closest_marker("sampled") or i.get_closest_marker("full_only")]
        if not marked:
            continue
        kept = _kept(group)
        behaviour = [i for i in group if not _tiers().is_gate(i)] if gates_run else []
        if behaviour:  # of a behaviour test, the gates' run runs the cases the default run left out
            by_default = {id(i) for i in _kept(behaviour)}
            rest_cases = [i for i in behaviour if id(i) not in by_default]
            rest[f"{path.name}::{name}"] = (len(rest_cases), len(behaviour))
            ran_by_default += [i for i in behaviour if id(i) in by_default]
            gate_cases = [i for i in group if _tiers().is_gate(i)]
            group, kept = gate_cases + rest_cases, _kept(gate_cases) + rest_cases
        if len(kept) < len(group):
            ids = {id(k) for k in kept}
            left_out += [i for i in group if id(i) not in ids]
            config._fusedrnn_sampled[f"{path.name}::{name}"] = (len(kept), len(group))
    if ran_by_default:  # the default run's sample: deselected here, counted with that tier's tests
        _tiers().deselect(config, items, ran_by_default)
    config._fusedrnn_rest = rest
    workers.send(config, "fusedrnn_rest", rest)
    if not left_out:
        return
    out = {id(i) for i in left_out}
    items[:] = [i for i in items if id(i) not in out]
    config.hook.pytest_deselected(items=left_out)
    workers.send(config, "fusedrnn_sampled", config._fusedrnn_sampled)
    if workers.is_worker(config) and config.workerinput["workerid"] != "gw0":
        return  # every worker takes the same sample: one writes it down
    try:
        report = _report(config)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("# kept\n" + "".join(i.nodeid + "\n" for i in items if i.get_closest_marker("sampled"))
                          + f"# left out ({_LEFT_TO[gates_run]})\n" + "".join(i.nodeid + "\n" for i in left_out))
    except OSError:  # a read-only checkout still runs its tests
        pass


def pytest_terminal_summary(terminalreporter, config):
    w = terminalreporter
    rest = getattr(config, "_fusedrnn_rest", {}) or next(iter(workers.received(config, "fusedrnn_rest")), {})
    if rest:
        ran = sum(k for k, _ in rest.values())
        w.section(f"the default run's sample: the {ran} cases of {len(rest)} sampled behaviour tests it left out ran here")
        for name, (k, n) in sorted(rest.items()):
            w.write_line(f"{k:5d} of {n:5d}  {name}")
    sampled = getattr(config, "_fusedrnn_sampled", {}) or next(iter(workers.received(config, "fusedrnn_sampled")), {})
    sampled = {name: kn for name, kn in sampled.items() if name not in rest}
    if not sampled:
        return
    kept = sum(k for k, _ in sampled.values())
    total = sum(n for _, n in sampled.values())
    whole = "" if _tiers().gates_run(config) or not hasattr(config.option, "gates") else \
        "`bash scripts/test.sh --gates` runs the rest, "
    w.section(f"sampled: {kept} of {total} cases of {len(sampled)} parametrised tests ran, "
              f"{total - kept} left out ({whole}{FULL_ENV}=1 or `bash scripts/test.sh --full` runs every case)")
    for name, (k, n) in sorted(sampled.items()):
        w.write_line(f"{k:5d} of {n:5d}  {name}")
    w.write_line(f"the kept and left-out cases: {_report(config)}")
