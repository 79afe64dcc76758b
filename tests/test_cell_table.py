"""One cell table: the C++ one (csrc/cell_table.h), what each cell struct of csrc/cells/*.cuh
compiles to and what the built extension reports all equal the Python one, and no C++ file
states a cell's gates, saved slots or c state beside the table."""
import os
import re

import pytest

from fusedrnn.ops import CELLS, GATES  # fusedrnn/cell_table.py, re-exported
from fusedrnn.ops.cuda import SAVED_SLOTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")


def python_table() -> dict:
    """The Python side's facts per cell the CUDA kernels implement, {name: {id, gates, saved,
    has_c}}: the id is the cell's place in fusedrnn.ops.CELLS, the c state is the LSTM's."""
    return {name: dict(id=i, gates=GATES[name], saved=SAVED_SLOTS[name], has_c=name == "lstm")
            for i, name in enumerate(CELLS) if name in SAVED_SLOTS}


def test_the_cuda_backend_implements_every_cell():
    """The GRU with its reset gate before the product included (csrc/passes_reset.cuh)."""
    from fusedrnn.ops import cuda
    assert [c for c in CELLS if c not in SAVED_SLOTS] == []
    assert [c for c in CELLS if cuda.unsupported(c, None, 8)] == []


def test_the_cxx_table_is_the_python_table(cxx_selftest):
    assert cxx_selftest.cell_table() == python_table()


def test_each_cell_struct_compiles_to_its_row(cxx_selftest):
    want = {name: {k: v for k, v in row.items() if k != "id"} for name, row in python_table().items()}
    assert cxx_selftest.cell_structs() == want


def test_the_built_extension_saves_what_the_table_says():
    C = pytest.importorskip("fusedrnn._C", reason="the CUDA extension is not built (no nvcc)")
    assert {name: C.saved_slots(name) for name in python_table()} == {name: r["saved"] for name, r in python_table().items()}


def test_no_cxx_file_states_a_cells_facts_beside_the_table():
    """A literal G, S or HAS_C in a cell struct, or a gate count chosen by comparing cells, is a
    second copy of cell_table.h that could drift from it."""
    copies = re.compile(r"\b(?:G|S)\s*=\s*[1-9]|HAS_C\s*=\s*(?:true|false)|"
                        r"Cell::\w+\s*\?\s*\d|\"(?:lstm|gru|rnn_tanh|rnn_relu)\"\s*\)\s*return")
    found = []
    for dirpath, _, files in os.walk(CSRC):
        for name in files:
            path = os.path.join(dirpath, name)
            if name != "cell_table.h":
                with open(path) as f:
                    found += [f"{os.path.relpath(path, ROOT)}: {m.group(0)}" for m in copies.finditer(f.read())]
    assert not found, found
