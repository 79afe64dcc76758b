"""The grid barrier's memory ordering, read from the PTX it compiles to on sm_90
(tests/support/triton_sync_probe.py, compiled in a subprocess: the interpreter cannot compile).

The interpreter runs programs as Python threads on sequentially consistent memory, so a
poll without its acquire, or an arrival without its release, still passes every
interpreted test: only the compiled code shows them. tiles.sync's contract, in order:
a CTA barrier (every thread's stores before the arrival), one release add (the arrival),
the polls as acquire loads in a loop with no CTA barrier, no fence and no atomic in it (the
poll that sees the target is the acquire: no second, dependent load after the loop), the
CTA barrier that holds every thread until thread 0 acquired, and only then the exchange's
.cg load.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.gate  # `bash scripts/test.sh --gates` (tests/support/tiers.py)


@pytest.fixture(scope="module")
def ops():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "triton_sync_probe.py")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pattern = re.compile(r"bar\.sync|atom\.\S+|red\.\S+|ld\.(volatile|acquire|relaxed|global)\S*|fence\S*|membar\S*"
                         r"|^\$L__BB\d+_\d+:|bra\s+\$L__BB\d+_\d+")
    out = []
    for line in proc.stdout.splitlines():
        m = pattern.search(line.strip())
        if m:
            out.append(m.group(0))
    return out


def test_arrival_is_one_release_after_a_cta_barrier(ops):
    rel = [i for i, op in enumerate(ops) if op.startswith(("atom", "red")) and ".release" in op]
    assert len(rel) == 1 and ".add" in ops[rel[0]], ops
    assert "bar.sync" in ops[:rel[0]], ops
    assert not [op for op in ops if op.startswith(("fence", "membar")) or ".acq_rel" in op or ".sc." in op], ops


def test_poll_is_an_acquire_load_in_a_loop(ops):
    rel = next(i for i, op in enumerate(ops) if ".release" in op)
    acq = [i for i, op in enumerate(ops) if ".acquire" in op]
    assert acq and all(ops[i].startswith("ld.acquire.gpu") and i > rel for i in acq), ops
    assert not [op for op in ops if op.startswith("ld.volatile")], ops  # no relaxed poll before the acquire
    # the loop: a backward branch to a label between the arrival and the last acquire, whose
    # body holds an acquire load and no CTA barrier and no atomic
    labels = {op[:-1]: i for i, op in enumerate(ops) if op.startswith("$L__BB")}
    loops = [(labels[op.split()[-1]], i) for i, op in enumerate(ops)
             if op.startswith("bra") and labels.get(op.split()[-1], len(ops)) < i]
    body = [(a, b) for a, b in loops if rel < a and any(a < j < b for j in acq)]
    assert body, ("no poll loop of acquire loads", ops)
    a, b = body[0]
    assert not [op for op in ops[a:b] if op == "bar.sync" or op.startswith(("atom", "red"))], ops
    # after the loop exits, nothing but the timeout flag and the CTA barrier before the exchange
    assert not [i for i in acq if i > b], ("a second acquire after the poll loop", ops)


def test_exchange_is_read_after_the_acquire_and_a_cta_barrier(ops):
    acq = next(i for i, op in enumerate(ops) if ".acquire" in op)
    cg = [i for i, op in enumerate(ops) if op.startswith("ld.global.cg")]
    assert cg and all(i > acq for i in cg), ops
    assert "bar.sync" in ops[acq + 1:cg[0]], ops
