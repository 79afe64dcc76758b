"""The stages, in order, with their GPU-time plan: estimate (what the stage should take
on the lent H100), cap (the most it may take), reserve (time earlier stages must leave
for it). A stage runs for min(its cap, time left - the reserves of the stages after it -
FINALIZE_S); with less than MIN_STAGE_S it is not started. The estimates add up to the
plan in benchmarks/README.md (tools/tests/test_device_check.py keeps the two in step)."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DEADLINE_S = 540     # 9 minutes: the lease is 15, the machine's start takes 1-3
FINALIZE_S = 10              # summary.md, artifacts.tar.gz, the copy of the results
PLAN_LIMIT_S = 480           # the estimates (finalize included) stay under this: 60 s of slack
MIN_STAGE_S = 5


@dataclass(frozen=True)
class StagePlan:
    name: str
    what: str
    estimate_s: int      # on the GPU machine
    cap_s: int
    reserve_s: int
    rehearse_cap_s: int
    rehearse_reserve_s: int

    def cap(self, rehearse: bool) -> int:
        return self.rehearse_cap_s if rehearse else self.cap_s

    def reserve(self, rehearse: bool) -> int:
        return self.rehearse_reserve_s if rehearse else self.reserve_s


STAGES = (
    StagePlan("env", "nvidia-smi -q and every version; stops at once if torch sees no CUDA device",
              10, 45, 0, 60, 0),
    StagePlan("load", "the prebuilt CUDA kernels (build/prebuilt, built ahead: no nvcc here) checked against "
                      "the tree and this GPU's arch, the pybind11 binding compiled for this Python against them; "
                      "the carried Triton cache checked; stops if `import fusedrnn._C` fails", 25, 240, 0, 240, 0),
    StagePlan("calibrate", "micro-benchmarks of the machine model's constants (prebuilt, through ctypes) "
                           "-> $OUT/calibration.json", 30, 60, 0, 60, 0),
    StagePlan("smoke", "one tiny fwd+bwd per backend x tier x cell, CUDA_LAUNCH_BLOCKING=1, "
                       "a process and a time limit each, 8 at a time", 60, 120, 0, 180, 0),
    StagePlan("tests", "pytest tests/gpu (short files first) -n 6 --timeout 120 -v, junit; compute-sanitizer memcheck "
                       "on every smoke kernel beside it", 150, 240, 60, 240, 0),
    StagePlan("bench", "benchmarks.run, one process per dtype (bf16, fp16, fp32), a line per case",
              150, 210, 90, 180, 25),
    StagePlan("triage", "up to 5 failing tests again, alone, under compute-sanitizer memcheck",
              25, 60, 0, 60, 5),
)
NAMES = tuple(s.name for s in STAGES)


def by_name(name: str) -> StagePlan:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(name)


def budget(name: str, left_s: float, rehearse: bool, skipped=()) -> float:
    """Seconds stage `name` may run when `left_s` remain before the deadline."""
    later = NAMES[NAMES.index(name) + 1:]
    reserve = sum(by_name(n).reserve(rehearse) for n in later if n not in skipped)
    return max(0.0, min(by_name(name).cap(rehearse), left_s - FINALIZE_S - reserve))


def total_estimate_s() -> int:
    return sum(s.estimate_s for s in STAGES) + FINALIZE_S
