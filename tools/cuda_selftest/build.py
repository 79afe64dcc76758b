"""Build the test module _selftest (tools/cuda_selftest/*.cpp with csrc/plan.cpp) with the host
compiler, cached by the hash of csrc/ and this folder under build/selftest/, and import it.

What it holds is for tests only, so it stays out of fusedrnn._C (tests/test_cuda_exports.py):
    launch(name)          a scenario of csrc/launch.cuh against a recording fake CUDA runtime
    cell_forward/backward the host build of csrc/cells/*.cuh (the kernels' exact cell math)
    cell_structs()        gates, saved slots and c state of each cell struct as compiled
    cell_table()          csrc/cell_table.h

    python -m tools.cuda_selftest.build    builds it and prints its path
"""
from __future__ import annotations

import glob
import os
import sys

from tools.host_build import CSRC, ROOT, Loader, build_module, csrc_files, cuda_include, digest

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(ROOT, "build", "selftest")
FLAGS = ["-std=c++17", "-O1", "-fPIC", "-pthread", "-Wall"]
#: the csrc/ sources the self-tests link: the plan (the launch path and the cells are headers)
CSRC_SOURCES = ("plan.cpp",)


def sources() -> list[str]:
    return sorted(glob.glob(os.path.join(HERE, "*.cpp"))) + [os.path.join(CSRC, s) for s in CSRC_SOURCES]


def build() -> str:
    """Compile (if the sources changed) and return the path of the _selftest module."""
    include = cuda_include()
    if include is None:
        raise RuntimeError("the C++ self-tests need the CUDA headers (cuda_runtime.h; set CUDA_HOME)")
    own = sorted(glob.glob(os.path.join(HERE, "*.cpp")) + glob.glob(os.path.join(HERE, "*.h")))
    out_dir = os.path.join(BUILD, digest(FLAGS, include, csrc_files() + own))
    return build_module(out_dir, "_selftest", sources(), FLAGS, [CSRC, HERE, include])


#: the _selftest module, built on first use
load = Loader(build, "fusedrnn_selftest._selftest")


if __name__ == "__main__":
    print(build())
    sys.exit(0)
