"""Two processes asking tools/host_build.py for the same cached build at once (`pytest -n 2`:
both workers load the CUDA emulator) compile it once: the second waits for the first and
uses its module, instead of writing the same object files beside it."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ASK_FOR_BUILD = """
import sys
from tools.host_build import build_module
print(build_module(sys.argv[1], "m", [sys.argv[2]], ["-fPIC"], []))
"""


def test_concurrent_requests_compile_once(tmp_path):
    src = tmp_path / "m.cpp"
    src.write_text("extern \"C\" int answer() { return 42; }\n")
    log = tmp_path / "compiles.log"
    # a compiler that records each compile and takes its time, so the two requests overlap
    cxx = tmp_path / "slow-cxx"
    cxx.write_text(f'#!/usr/bin/env bash\ncase " $* " in *" -c "*) echo "$*" >> "{log}"; sleep 2;; esac\nexec c++ "$@"\n')
    cxx.chmod(0o755)
    env = {**os.environ, "CXX": str(cxx), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", ASK_FOR_BUILD, str(out), str(src)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    paths = {r[0].strip() for r in results}
    assert len(paths) == 1 and os.path.isfile(paths.pop())
    assert len(log.read_text().splitlines()) == 1, log.read_text()
