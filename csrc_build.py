"""How setup.py builds the CUDA extension (placeholder until csrc/ has sources)."""
from setuptools.command.build_ext import build_ext as BuildExt  # noqa: F401


def cuda_extensions():
    return []
