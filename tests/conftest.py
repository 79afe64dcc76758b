import os

import torch

# the default run's sample of long parametrisations, --cpu-durations=N (tests/support), and
# pytester (tests/test_sampling.py runs pytest on small test files)
pytest_plugins = ("support.sampling", "support.cpu_time", "pytester")

# Without a GPU, Triton kernels run on the CPU interpreter; set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Fixtures more than one test file uses (tests/support defines them, here they are shared)
from support.emulated import cuda_kernels, emu, knobs  # noqa: E402,F401
from support.triton_layouts import concurrent  # noqa: E402,F401
from support.tuning import fake_card  # noqa: E402,F401
