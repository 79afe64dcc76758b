import os

import torch

# Without a GPU, Triton kernels run on the CPU interpreter; set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402


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
