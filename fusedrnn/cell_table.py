"""The cells fusedrnn runs, declared once: every Python module that needs a cell's gates, its
kernel id, whether it has a cell state or what its kernels save reads this table.

    name      the cell's name in fusedrnn ("lstm", "gru", "rnn_tanh", "rnn_relu", and
              "gru_reset_before": fusedrnn.GRU(reset_after=False), n = tanh(x_n + W_hn (r ⊙ h) + b_hn)
              where torch.nn's "gru" computes tanh(x_n + r ⊙ (W_hn h + b_hn)))
    cell_id   the kernels' cell constant: the Triton kernels' CELL constexpr, csrc/api.h's enum Cell
    gates     G, gate blocks of W_ih / W_hh in torch.nn's order (LSTM i,f,g,o · GRU r,z,n · RNN one)
    has_c     whether the cell carries a cell state c beside h (LSTM)
    cuda_saved_slots    fp32 values per (t, b, unit) the CUDA forward saves for its backward
                        (LSTM i,f,g,o,c_prev · GRU r,z,n,W_hn h+b_hn,h_prev · RNN h ·
                        gru_reset_before r,z,n,h_prev)
    triton_saved_slots  the same for the Triton forward's activations (LSTM σi,σf,tanh g,σo ·
                        GRU r,z,n,W_hn h+b_hn · RNN h) ...
    triton_saves_state  ... which saves the state entering each step as a tensor of its own
    torch_nn  whether torch.nn computes this cell itself (backend "torch", TorchScript, the ONNX
              export of torch.nn's twin); the GRU with reset_after=False is fusedrnn's own
    cuda_saved_slots is None for a cell the CUDA kernels do not implement

`CELLS` is a plain dict of frozen dataclasses (`dataclasses.asdict` gives plain dicts), so a
test can compare it with the C++ extension's values.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    name: str
    cell_id: int
    gates: int
    has_c: bool
    cuda_saved_slots: int | None
    triton_saved_slots: int
    triton_saves_state: bool
    torch_nn: bool = True


CELLS: dict[str, Cell] = {c.name: c for c in (
    Cell("lstm", 0, gates=4, has_c=True, cuda_saved_slots=5, triton_saved_slots=4, triton_saves_state=True),
    Cell("gru", 1, gates=3, has_c=False, cuda_saved_slots=5, triton_saved_slots=4, triton_saves_state=True),
    Cell("rnn_tanh", 2, gates=1, has_c=False, cuda_saved_slots=1, triton_saved_slots=1, triton_saves_state=False),
    Cell("rnn_relu", 3, gates=1, has_c=False, cuda_saved_slots=1, triton_saved_slots=1, triton_saves_state=False),
    Cell("gru_reset_before", 4, gates=3, has_c=False, cuda_saved_slots=4, triton_saved_slots=4,
         triton_saves_state=True, torch_nn=False),
)}

#: the cell names, in the kernels' id order
NAMES = tuple(CELLS)
#: G per cell name (the form most callers want)
GATES = {name: c.gates for name, c in CELLS.items()}
#: the cells torch.nn computes itself
TORCH_CELLS = tuple(name for name, c in CELLS.items() if c.torch_nn)
#: the GRU with its reset gate applied before the recurrent product (fusedrnn.GRU(reset_after=False))
GRU_RESET_BEFORE = "gru_reset_before"


def gates(name: str) -> int:
    return CELLS[name].gates
