"""Two tiers of tests, both run by CI (.ci/run runs one command after the other):

- the behaviour tests, `bash scripts/test.sh` (plain `pytest`): everything not marked `gate`;
- the compile gates, `bash scripts/test.sh --gates` (`pytest --gates`): the tests marked
  `@pytest.mark.gate`, which compile kernels for sm_90 or read the machine code compiled for it
  (the Triton and CUDA compile gates, the critical-path check, the SASS and PTX checks). They
  need no GPU but minutes of compiler time, so the README's test command leaves them out.

Each run deselects the other tier's tests, never skips them: pytest's summary counts them as
"deselected" and the run ends with a line saying how many it left and which command runs them.
Of a behaviour test whose long parametrisation the default run samples (tests/support/sampling.py),
`--gates` runs the cases that sample left out, so the two runs hold every case between them.
`--all-tiers` runs both (scripts/triton_compat.sh: the Triton tests under another release).
"""
from __future__ import annotations

import pytest

from support import workers

GATES_OPTION, ALL_OPTION = "--gates", "--all-tiers"


def pytest_addoption(parser):
    parser.addoption(GATES_OPTION, action="store_true", default=False,
                     help="run only the compile gates (tests marked `gate`: they compile for sm_90 or read its "
                          "machine code); without it they are deselected (tests/support/tiers.py)")
    parser.addoption(ALL_OPTION, action="store_true", default=False,
                     help="run the behaviour tests and the compile gates (tests/support/tiers.py)")


def pytest_configure(config):
    config.addinivalue_line("markers", "gate: a compile gate (compiles for sm_90 or reads its machine code): runs "
                                       f"only with `pytest {GATES_OPTION}` (`bash scripts/test.sh --gates`)")
    config._fusedrnn_tier_left = 0


def is_gate(item) -> bool:
    return item.get_closest_marker("gate") is not None


def gates_run(config) -> bool:
    """This run is the compile gates' (`--gates`, not `--all-tiers`); False without this plugin."""
    return bool(config.getoption(GATES_OPTION, default=False)) and not config.getoption(ALL_OPTION, default=False)


def _sampled(item) -> bool:
    return item.get_closest_marker("sampled") is not None or item.get_closest_marker("full_only") is not None


def deselect(config, items, chosen) -> None:
    """Deselect `chosen`, the other tier's tests, and count them in this run's tier line."""
    out = {id(i) for i in chosen}
    items[:] = [i for i in items if id(i) not in out]
    config.hook.pytest_deselected(items=list(chosen))
    config._fusedrnn_tier_left = getattr(config, "_fusedrnn_tier_left", 0) + len(chosen)
    workers.send(config, "fusedrnn_tier_left", config._fusedrnn_tier_left)


def pytest_collection_modifyitems(config, items):
    """Keep this run's tier (before the sample is taken: tests/support/sampling.py runs last).
    The gates' run keeps the sampled behaviour tests too: the sample then leaves it the cases
    the default run left out (none when the default run was the full one: it ran them all)."""
    from support import sampling  # here: sampling imports this module

    if config.getoption(ALL_OPTION):
        return
    if config.getoption(GATES_OPTION):
        rest = not sampling.full_run()
        left = [i for i in items if not is_gate(i) and not (rest and _sampled(i))]
    else:
        left = [i for i in items if is_gate(i)]
    if left:
        deselect(config, items, left)


def pytest_terminal_summary(terminalreporter, config):
    n = getattr(config, "_fusedrnn_tier_left", 0) or next(iter(workers.received(config, "fusedrnn_tier_left")), 0)
    if not n:
        return
    if config.getoption(GATES_OPTION):
        line = f"tiers: {n} behaviour tests deselected (not marked `gate`): `bash scripts/test.sh` runs them"
    else:
        line = (f"tiers: {n} compile-gate tests deselected (marked `gate`: they compile for sm_90 or read its "
                "machine code): `bash scripts/test.sh --gates` runs them, and the Triton kernel tests under "
                "the oldest and newest supported triton")
    terminalreporter.write_line(line)
