"""What a device-check run knows as it goes: where things are, the clock, each stage's
result, and the exit code they add up to."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

# exit codes, most severe first (the run exits with the first that applies)
NO_GPU, BUILD_FAILED, CRASH, WRONG, DEADLINE, OTHER, OK, USAGE = 10, 11, 13, 12, 14, 15, 0, 2
CATEGORY_CODES = {"no_gpu": NO_GPU, "build": BUILD_FAILED, "crash": CRASH, "wrong": WRONG,
                  "deadline": DEADLINE, "other": OTHER}
CODE_MEANING = {OK: "every stage passed", NO_GPU: "no CUDA device (or torch missing): stopped at once",
                BUILD_FAILED: "build failed: fusedrnn._C does not import", CRASH: "a crash, hang or memory error",
                WRONG: "wrong results", DEADLINE: "out of time: a stage was cut short or not started",
                OTHER: "a tool or stage failed for another reason", USAGE: "bad arguments"}


@dataclass
class StageResult:
    name: str
    status: str = "not run"
    seconds: float = 0.0
    counts: str = ""
    first_error: str = ""
    categories: list = field(default_factory=list)   # keys of CATEGORY_CODES
    log: str = ""                                     # path inside artifacts.tar.gz

    def add(self, category: str | None) -> None:
        if category and category not in self.categories:
            self.categories.append(category)


#: the order of tests/gpu's files in the tests stage (pytest, and xdist's scheduler, follow the
#: command line): the short files of every backend first, so that a stage cut short by the
#: deadline loses the long CUDA parametrizations (the smoke and memcheck cover their kernels)
GPU_TEST_ORDER = ("test_reference_gpu.py", "test_integration_gpu.py", "test_hostile_gpu.py",
                  "test_triton_gpu.py", "test_cells_decode_gpu.py", "test_cuda_gpu.py")


def default_tests(repo: Path) -> tuple:
    """Every tests/gpu/test_*.py, those of GPU_TEST_ORDER first in its order, any other after."""
    files = sorted(p.name for p in (repo / "tests" / "gpu").glob("test_*.py"))
    ordered = [f for f in GPU_TEST_ORDER if f in files] + [f for f in files if f not in GPU_TEST_ORDER]
    return tuple(f"tests/gpu/{f}" for f in ordered)


@dataclass
class Ctx:
    repo: Path
    out: Path
    work: Path
    rehearse: bool
    deadline_s: float
    python: str = sys.executable
    skip: tuple = ()
    tests: tuple = ("tests/gpu",)
    bench_dtypes: tuple = ()
    commit: str = ""
    t0: float = field(default_factory=time.monotonic)
    env_info: dict = field(default_factory=dict)
    results: list = field(default_factory=list)        # StageResult, in order
    smoke: list = field(default_factory=list)
    memcheck: list = field(default_factory=list)
    junit: dict | None = None
    failures: list = field(default_factory=list)       # junit.Failure as dicts
    bench: dict = field(default_factory=dict)          # dtype -> {"file", "rows", "summary", "meta"}
    triage: list = field(default_factory=list)
    aborted: str = ""                                  # why later stages were not run
    extra_env: dict = field(default_factory=dict)      # for every later child (the load stage: Triton's cache)
    triton_cache: dict = field(default_factory=dict)   # what the load stage found of the carried cache
    calibration: dict = field(default_factory=dict)    # calibration.json, as written
    say: Callable[[str], None] = print                 # the console and device_check.log

    @property
    def pkg(self) -> str:
        """This package's import name (tools.device_check: run from a checkout, never installed)."""
        return __package__

    @property
    def suite(self) -> str:
        """The benchmark suite's import name: the checkout's benchmarks package."""
        return "benchmarks"

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.deadline_s - self.elapsed()

    def child_env(self, **extra) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # the interpreter's own bin first, as an activated environment has it (its ninja builds
        # the extension, as in scripts/setup_env.sh: a different ninja would restart the build)
        env["PATH"] = os.pathsep.join([str(Path(self.python).parent), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join([str(self.repo)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        if self.rehearse:
            env["TRITON_INTERPRET"] = "1"
        if self.commit:
            env["FUSEDRNN_GIT_COMMIT"] = self.commit
        env.update({k: str(v) for k, v in self.extra_env.items()})
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def exit_code(self) -> int:
        cats = {c for r in self.results for c in r.categories}
        for code in (NO_GPU, BUILD_FAILED, CRASH, WRONG, DEADLINE, OTHER):
            if any(CATEGORY_CODES[c] == code for c in cats):
                return code
        return OK

    def as_json(self) -> dict:
        return {"rehearse": self.rehearse, "deadline_s": self.deadline_s, "elapsed_s": round(self.elapsed(), 1),
                "commit": self.commit, "env": self.env_info, "stages": [asdict(r) for r in self.results],
                "smoke": self.smoke, "memcheck": self.memcheck, "junit": self.junit, "failures": self.failures,
                "bench": {d: {k: v for k, v in b.items() if k != "rows"} for d, b in self.bench.items()},
                "triage": self.triage, "aborted": self.aborted, "triton_cache": self.triton_cache,
                "calibration": self.calibration, "exit_code": self.exit_code(),
                "exit_meaning": CODE_MEANING[self.exit_code()]}
