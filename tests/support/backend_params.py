"""The backends a CPU test runs on: the reference, the kernel-backend path (tests/support/plain_kernels.py
behind the "triton" name) and the Triton kernels in the interpreter (skipped, with the reason,
where triton cannot run)."""
import pytest
import torch

import fusedrnn
from support import plain_kernels


def triton_reason():
    """None if the Triton kernels can run on the CPU here (the interpreter), else why not."""
    return fusedrnn.backends.why_not("triton", torch.device("cpu"), "lstm", torch.float32, 8)


needs_triton = pytest.mark.skipif(triton_reason() is not None, reason=f"triton cannot run here: {triton_reason()}")

#: fixture params: every backend a CPU test can exercise
ALL = ["reference", "kernels", pytest.param("triton", marks=needs_triton)]


def resolve(param: str, monkeypatch) -> str:
    """The backend name to pass for a param of ALL ("kernels" installs plain_kernels for one test)."""
    return plain_kernels.install(monkeypatch) if param == "kernels" else param
