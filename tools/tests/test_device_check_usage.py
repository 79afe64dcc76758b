"""Bad usage of benchmarks/device_check.sh is refused before anything runs: exit code 2
(context.USAGE) and one line on stderr, never a traceback. An output folder it cannot write
to ($OUT=/dev/null, a regular file, an impossible path) is bad usage; so is a deadline that
is not a finite number (nan passed `deadline <= 10` and disabled every stage's budget)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.device_check.context import USAGE

REPO = Path(__file__).resolve().parents[2]


def _run(args, out):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(out))
    return subprocess.run(["bash", "benchmarks/device_check.sh", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def _refused(proc, words):
    assert proc.returncode == USAGE, proc.stdout + proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("bash benchmarks/device_check.sh: error: ") and words in proc.stderr


@pytest.mark.parametrize("kind", ["/dev/null", "a regular file", "below a regular file", "below /dev/null"])
def test_an_out_that_is_not_a_writable_folder_is_bad_usage(tmp_path, kind):
    regular = tmp_path / "file"
    regular.write_text("keep me\n")
    out = {"/dev/null": Path("/dev/null"), "a regular file": regular, "below a regular file": regular / "out",
           "below /dev/null": Path("/dev/null/out")}[kind]
    _refused(_run(["--rehearse"], out), f"--out/$OUT {out}")
    assert regular.read_text() == "keep me\n" and list(tmp_path.iterdir()) == [regular]


def test_a_work_folder_that_is_a_file_is_bad_usage(tmp_path):
    (tmp_path / "work").write_text("")
    _refused(_run(["--rehearse", "--work", str(tmp_path / "work")], tmp_path / "out"), "--work")


@pytest.mark.parametrize("deadline", ["nan", "inf", "-inf", "-5", "10"])
def test_a_deadline_that_is_not_a_finite_number_of_seconds_is_bad_usage(tmp_path, deadline):
    _refused(_run([f"--deadline={deadline}"], tmp_path / "out"), "--deadline must be a finite number")
    assert not (tmp_path / "out").exists()


def test_other_bad_arguments_are_one_line_too(tmp_path):
    _refused(_run(["--skip", "bogus"], tmp_path / "out"), "unknown stage")
    _refused(_run(["--no-such-flag"], tmp_path / "out"), "unrecognized arguments")
