import os

import torch

# --cpu-durations=N: the slowest test files and tests by CPU time (tests/support/cpu_time.py)
pytest_plugins = ("support.cpu_time",)

# Without a GPU, Triton kernels run on the CPU interpreter; set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Fixtures more than one test file uses (tests/support defines them, here they are shared)
from support.emulated import cuda_kernels, emu, knobs  # noqa: E402,F401
from support.triton_layouts import concurrent  # noqa: E402,F401
from support.tuning import fake_card  # noqa: E402,F401
