"""The CUDA kernels on the CPU: build csrc/ with FUSEDRNN_EMULATE (tools/cuda_emu) and run
fusedrnn.ops.cuda's launchers on CPU tensors through it.

The host compiler builds every kernel of csrc/ as C++; tools/cuda_emu/emu.cpp runs each CUDA
thread as a fiber, and rebuilds the tensor-core and ldmatrix fragments from the 32 lanes as
the PTX ISA lays them out. So a wrong fragment address, a broken exchange between CTAs, a
missing wait or an out-of-range shared-memory access shows here, without a GPU; what the
emulation cannot show (timing, register pressure, the real memory model) is the GPU's.

`load()` builds once per source hash into build/emu/ (about a minute on two cores) and
returns the module; `emulated()` is a context manager that points fusedrnn.ops.cuda at it,
so its forward/backward/step run on CPU tensors.
"""
from __future__ import annotations

import contextlib
import glob
import os
import sys

if not __package__:  # run as a script (python tools/cuda_emu/build.py): the checkout's root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tools.host_build import CSRC, ROOT, Loader, build_module, csrc_files, cuda_include, digest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))  # tools/cuda_emu: the emulator itself
BUILD = os.path.join(ROOT, "build", "emu")
FLAGS = ["-std=c++17", "-O1", "-g", "-fPIC", "-DFUSEDRNN_EMULATE", "-Wno-attributes", "-pthread"]
__all__ = ["build", "load", "emulated", "cuda_include"]


def _sources() -> list[str]:
    return sorted(glob.glob(os.path.join(CSRC, "*.cu")) + glob.glob(os.path.join(CSRC, "kernels", "*.cu"))
                  + glob.glob(os.path.join(CSRC, "*.cpp")) + [os.path.join(HERE, "emu.cpp")])


def _digest(include: str) -> str:
    return digest(FLAGS, include, csrc_files() + [os.path.join(HERE, n) for n in ("emu.cpp", "emu.h")])


def build() -> str:
    """Compile (if the sources changed) and return the path of the emulated _C module."""
    include = cuda_include()
    if include is None:
        raise RuntimeError("the emulated CUDA build needs the CUDA headers (set CUDA_HOME)")
    return build_module(os.path.join(BUILD, _digest(include)), "_C", _sources(), FLAGS, [CSRC, HERE, include])


#: the emulated extension module, built on first use
load = Loader(build, "fusedrnn_emulated._C")


@contextlib.contextmanager
def emulated():
    """fusedrnn.ops.cuda's launchers on CPU tensors, through the emulated kernels."""
    from fusedrnn.ops import cuda

    mod = load()
    saved = cuda._C, cuda._launch_context
    cuda._C = mod
    cuda._launch_context = lambda t: (0, 0)
    try:
        yield mod
    finally:
        cuda._C, cuda._launch_context = saved


# The shapes the GPU check runs (docs/anchors.md), each as the library plans it for an H100:
# cell, B, H, directions, LSTM projection (P = 3), dtype. T = 2: the plan does not depend on T.
ANCHOR_SPECS = [
    ("lstm", 1, 256, 1, False, "bfloat16"), ("lstm", 8, 128, 2, False, "bfloat16"),
    ("gru", 16, 768, 1, False, "bfloat16"), ("lstm", 16, 768, 1, False, "float32"),
    ("lstm", 16, 768, 2, True, "bfloat16"), ("lstm", 32, 512, 2, False, "float16"),
    ("lstm", 64, 1024, 1, False, "bfloat16"), ("lstm", 64, 1024, 2, False, "bfloat16"),
    ("rnn_tanh", 64, 1024, 1, False, "bfloat16"), ("lstm", 256, 512, 1, False, "bfloat16"),
]


def main(argv=None) -> int:
    """python tools/cuda_emu/build.py [--anchors]: build; with --anchors, run the anchor shapes as
    planned for an H100 (every tier the GPU will use, at full size and T = 2) against float64
    with the rule of tests/test_cuda_emulated.py. Slow (tens of minutes on two cores), so not in CI."""
    import argparse
    import time
    import warnings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--anchors", action="store_true")
    args = parser.parse_args(argv)
    print(build())
    if not args.anchors:
        return 0
    sys.path.insert(0, os.path.join(ROOT, "tests"))  # the tests' support package
    warnings.filterwarnings("ignore", "LSTM with projections")
    os.environ.setdefault("FUSEDRNN_EMU_TIMEOUT", "3600")  # one launch at full size takes minutes here
    import torch

    from support import contract, emulated
    from fusedrnn.ops import cuda

    failed = 0
    with emulated():
        os.environ[cuda.POISON_ENV] = "1"
        for cell, B, H, D, proj, dt in ANCHOR_SPECS:
            dtype = getattr(torch, dt)
            case = contract.Case(cell, D, proj=proj, lengths=tuple(2 - i % 2 for i in range(B)), T=2, B=B, H=H)
            tiers = [cuda.plan_for(cell, dtype, B, H, backward=bw, directions=D, proj_size=3 if proj else 0)["tier"]
                     for bw in (False, True)]
            t0 = time.time()
            try:
                emulated.check(case, dtype)
                verdict = "ok"
            except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
                verdict, failed = f"FAIL {type(e).__name__}: {e}", failed + 1
            print(f"{case} {dt}: forward {tiers[0]}, backward {tiers[1]}: {verdict} ({time.time() - t0:.0f} s)",
                  flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
