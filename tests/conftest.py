import os

import pytest
import torch

# the default run's sample of long parametrisations, the two tiers (behaviour tests; the compile
# gates, `--gates`), --cpu-durations=N, their summaries under `pytest -n N` (tests/support), and
# pytester (tests/test_sampling.py runs pytest on small test files)
pytest_plugins = ("support.workers", "support.sampling", "support.tiers", "support.cpu_time", "pytester")

# Without a GPU, Triton kernels run on the CPU interpreter; set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Fixtures more than one test file uses (tests/support defines them, here they are shared)
from support.emulated import cuda_kernels, emu, knobs  # noqa: E402,F401
from support.triton_layouts import concurrent  # noqa: E402,F401
from support.tuning import fake_card  # noqa: E402,F401

@pytest.fixture(scope="session")
def cxx_selftest():
    """The C++ test module (tools/cuda_selftest: the launch path against a fake CUDA runtime, the
    host build of the cell math, the C++ cell table), built on first use; not part of fusedrnn._C."""
    from tools.cuda_selftest import build
    from tools.host_build import cuda_include

    if cuda_include() is None:
        pytest.skip("no CUDA headers (cuda_runtime.h) for the C++ self-tests: install the CUDA toolkit or set CUDA_HOME")
    return build.load()


@pytest.fixture
def monkeypatch(monkeypatch):
    """pytest's monkeypatch, with fusedrnn's snapshot of the environment (fusedrnn.settings,
    read once at import) refreshed after each setenv/delenv and after the test's changes are
    undone: a test sets a variable and the next call sees it, as a user's process would after
    fusedrnn.settings.refresh()."""
    from fusedrnn import settings  # noqa: PLC0415

    set_env, del_env = monkeypatch.setenv, monkeypatch.delenv

    def setenv(*args, **kwargs):
        set_env(*args, **kwargs)
        settings.refresh()

    def delenv(*args, **kwargs):
        del_env(*args, **kwargs)
        settings.refresh()

    monkeypatch.setenv, monkeypatch.delenv = setenv, delenv
    yield monkeypatch
    monkeypatch.undo()
    settings.refresh()
