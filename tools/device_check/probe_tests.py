"""Test hooks of the device check (never part of a real run unless asked for):

- FUSEDRNN_DEVICE_CHECK_HANG=tests: the tests stage also collects this file, whose
  test_probe_hangs then sleeps until the stage is stopped; any other stage name makes
  that stage's command `python probe_tests.py hang`, which sleeps the same way.
- FUSEDRNN_DEVICE_CHECK_FAIL=1: test_probe_fails fails like a wrong result would.

tools/tests/test_device_check.py uses them to prove that a hung stage is stopped and that
summary.md and junit.xml still come back.
"""
import os
import sys
import time

import pytest

HANG_ENV, FAIL_ENV = "FUSEDRNN_DEVICE_CHECK_HANG", "FUSEDRNN_DEVICE_CHECK_FAIL"


def test_probe_passes():
    assert sum([1, 2]) == 3


def test_probe_fails():
    if not os.environ.get(FAIL_ENV):
        pytest.skip("FUSEDRNN_DEVICE_CHECK_FAIL is not set")
    assert 1 + 1 == 3, "probe: a planted wrong result"


def test_probe_hangs():
    if os.environ.get(HANG_ENV) != "tests":
        pytest.skip("FUSEDRNN_DEVICE_CHECK_HANG is not 'tests'")
    time.sleep(3600)


if __name__ == "__main__" and sys.argv[1:] == ["hang"]:
    print("probe: hanging until stopped", flush=True)
    time.sleep(3600)
