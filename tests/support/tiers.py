"""Two tiers of tests, both run by CI (.ci/run runs one command after the other):

- the behaviour tests, `bash scripts/test.sh` (plain `pytest`): everything not marked `gate`;
- the compile gates, `bash scripts/test.sh --gates` (`pytest --gates`): the tests marked
  `@pytest.mark.gate`, which compile kernels for sm_90 or read the machine code compiled for it
  (the Triton and CUDA compile gates, the critical-path check, the SASS and PTX checks). They
  need no GPU but minutes of compiler time, so the README's test command leaves them out.

Each run deselects the other tier's tests, never skips them: pytest's summary counts them as
"deselected" and the run ends with a line saying how many it left and which command runs them.
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


def pytest_collection_modifyitems(config, items):
    """Keep this run's tier (before the sample is taken: tests/support/sampling.py runs last)."""
    if config.getoption(ALL_OPTION):
        return
    gates = config.getoption(GATES_OPTION)
    left = [i for i in items if (i.get_closest_marker("gate") is not None) != gates]
    if not left:
        return
    out = {id(i) for i in left}
    items[:] = [i for i in items if id(i) not in out]
    config.hook.pytest_deselected(items=left)
    config._fusedrnn_tier_left = len(left)
    workers.send(config, "fusedrnn_tier_left", len(left))


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
