"""The grid barrier's memory ordering, read from the PTX it compiles to on sm_90
(tests/triton_sync_probe.py, compiled in a subprocess: the interpreter cannot compile).

The interpreter runs programs as Python threads on sequentially consistent memory, so a
poll without its acquire, or an arrival without its release, still passes every
interpreted test: only the compiled code shows them. tiles.sync's contract, in order:
a CTA barrier (every thread's stores before the arrival), one release add (the arrival),
the polls as plain volatile loads in a loop with no CTA barrier, no fence and no atomic in
it, one acquire load, the CTA barrier that holds every thread until thread 0 acquired,
and only then the exchange's .cg load.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ops():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "triton_sync_probe.py")], env=env, cwd=ROOT,
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


def test_poll_is_a_plain_load_then_one_acquire(ops):
    acq = [i for i, op in enumerate(ops) if ".acquire" in op]
    assert len(acq) == 1 and ops[acq[0]].startswith("ld.acquire.gpu"), ops
    rel = next(i for i, op in enumerate(ops) if ".release" in op)
    polls = [i for i, op in enumerate(ops) if op.startswith("ld.volatile")]
    assert polls and all(rel < i < acq[0] for i in polls), ops
    # between the arrival and the acquire: the poll loop, with no CTA barrier and no atomic
    assert not [op for op in ops[rel + 1:acq[0]] if op == "bar.sync" or op.startswith(("atom", "red"))], ops
    assert any(op.startswith("bra") for op in ops[rel + 1:acq[0]]), "no poll loop"


def test_exchange_is_read_after_the_acquire_and_a_cta_barrier(ops):
    acq = next(i for i, op in enumerate(ops) if ".acquire" in op)
    cg = [i for i, op in enumerate(ops) if op.startswith("ld.global.cg")]
    assert cg and all(i > acq for i in cg), ops
    assert "bar.sync" in ops[acq + 1:cg[0]], ops
