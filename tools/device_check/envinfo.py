"""`python -m tools.device_check.envinfo`: one JSON object with the versions of
everything the device check depends on and what torch sees (run in a child process, so
a broken install is reported rather than fatal)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import sys


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect() -> dict:
    info = {"python": platform.python_version(), "executable": sys.executable, "machine": platform.machine()}
    for dist in ("torch", "triton", "numpy", "pytest", "pytest-xdist", "pytest-timeout", "pybind11", "ninja",
                 "setuptools", "matplotlib"):
        info[dist] = _version(dist)
    info["plugins"] = {"xdist": importlib.util.find_spec("xdist") is not None,
                       "pytest_timeout": importlib.util.find_spec("pytest_timeout") is not None}
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        info["torch_error"] = f"{type(e).__name__}: {e}"
        info["cuda"] = False
        return info
    info.update(torch_cuda=torch.version.cuda, cuda=torch.cuda.is_available(),
                cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    if info["cuda"]:
        p = torch.cuda.get_device_properties(0)
        info.update(card=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1), gpus=torch.cuda.device_count(),
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    return info


if __name__ == "__main__":
    print(json.dumps(collect()))
