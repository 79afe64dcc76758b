"""Running the Triton recurrence in a forced layout: a device small enough for every structure, the
launch forced, and grid programs in threads under the interpreter."""
import contextlib

import pytest

from fusedrnn.ops.triton import config

from support import interpreter_threads

SMALL_DEVICE = config.DeviceLimits(6, 227 * 1024, 65536)


@pytest.fixture(scope="module")
def concurrent():
    """Programs in threads under the interpreter (checked by a handshake kernel first)."""
    if not config.INTERPRET:
        yield
        return
    with interpreter_threads.concurrent_programs(timeout_s=120):
        interpreter_threads.self_test()
        yield


@contextlib.contextmanager
def forced(monkeypatch, launch):
    monkeypatch.setattr(config, "choose", lambda *args, **kwargs: launch)
    monkeypatch.setitem(config.TUNING, "spin_limit", 1 << 16)
    yield
