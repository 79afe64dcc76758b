"""The example scripts (examples/*.py) loaded as modules for the tests, the way
`python examples/x.py` runs them: with examples/ on sys.path for their helper modules; and
one torch thread while they run (the models are tiny: one thread is faster and does not
oversubscribe CI's 2 cores)."""
import contextlib
import importlib.util
import pathlib
import sys

import pytest
import torch

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"fusedrnn_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_thread():
    """Autouse in every module that imports it."""
    with torch_threads(1):
        yield
