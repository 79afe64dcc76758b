"""What is benchmarked: a `Case` is one module configuration and input shape.

Sections: "layer" (one nn.LSTM/GRU/RNN at the anchor shapes of docs/anchors.md, or --shapes),
"model" (the encoder and decoding cases of benchmarks/model_cases.py) and "variant" (fusedrnn's
cells that torch.nn lacks, benchmarks/variant_cases.py).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DEFAULT_CELLS = ("lstm", "gru", "rnn_tanh")
MODES = ("fw", "fwbw")
DTYPES = ("fp32", "bf16", "fp16")
DTYPE_ALIASES = {"fp32": "fp32", "float32": "fp32", "float": "fp32",
                 "bf16": "bf16", "bfloat16": "bf16",
                 "fp16": "fp16", "float16": "fp16", "half": "fp16"}

# (B, T, H) of the anchor shapes (docs/anchors.md): input size = H, 1 layer, batch_first=True
ANCHOR_SHAPES = ((1, 1024, 256), (8, 512, 128), (16, 1024, 768), (64, 256, 1024), (256, 128, 512))
# CPU default: correctness on tiny shapes (the Triton interpreter is slow), timing on small ones
CPU_CHECK_SHAPES = ((2, 5, 8), (3, 7, 16))
CPU_TIMING_SHAPES = ((1, 32, 64), (8, 32, 128))


@dataclass(frozen=True)
class Case:
    section: str            # "layer" | "model"
    name: str               # cell name for layer cases; "encoder-padded", "encoder-packed", "decode"
    cell: str               # "lstm" | "gru" | "rnn_tanh" | "rnn_relu"
    B: int
    T: int                  # sequence length; for decode: steps per timed call
    H: int
    I: int                  # input size
    layers: int = 1
    bidirectional: bool = False
    packed: bool = False
    min_len: int = 0        # packed: lengths uniform in [min_len, T]
    decode: bool = False    # one module call per step, state carried, no_grad
    api: str = "module"     # decode: "module" (nn.LSTM called with T=1) | "cells" (a stack of LSTMCells)
    graph: bool = False     # decode: the step captured in a CUDA graph, replayed per step
    options: tuple = ()     # variant: fusedrnn keyword arguments, e.g. (("reset_after", False),)

    @property
    def label(self) -> str:
        extra = ""
        if self.layers != 1:
            extra += f" L={self.layers}"
        if self.bidirectional:
            extra += " bi"
        if self.I != self.H:
            extra += f" I={self.I}"
        extra += "".join(f" {k}={v}" for k, v in self.options)
        if self.decode:
            how = f"{self.api} {'graph' if self.graph else 'eager'}"
            return f"{self.name} {self.cell}{extra} B={self.B} H={self.H} {how} (per step)"
        if self.section == "model":
            return f"{self.name} {self.cell}{extra} B={self.B} T={self.T} H={self.H}"
        return f"{self.cell}{extra} B={self.B} T={self.T} H={self.H}"

    def modes(self, wanted) -> tuple[str, ...]:
        """Decoding is timed under no_grad only."""
        return tuple(m for m in wanted if not (self.decode and m != "fw"))

    def as_dict(self) -> dict:
        return asdict(self)


def layer_cases(cells, shapes, layers: int = 1, bidirectional: bool = False) -> list[Case]:
    return [Case("layer", cell, cell, B, T, H, H, layers, bidirectional)
            for cell in cells for (B, T, H) in shapes]


# -- argparse value types (errors become "error: argument --x: ..." and exit code 2) --------

def parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 3 or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"invalid shape {text!r}: expected B,T,H with three positive integers, e.g. 8,512,128")
    return vals  # type: ignore[return-value]


def parse_choice_list(choices, aliases=None):
    """An argparse type for 'a,b' items (the option takes nargs='+'), each in `choices`."""
    def parse(text: str) -> list[str]:
        out = []
        for item in filter(None, (s.strip() for s in text.split(","))):
            name = (aliases or {}).get(item.lower(), item.lower())
            if name not in choices:
                raise argparse.ArgumentTypeError(f"invalid choice {item!r} (choose from {', '.join(choices)})")
            out.append(name)
        if not out:
            raise argparse.ArgumentTypeError("empty list")
        return out
    return parse


def flatten_unique(groups) -> list:
    """[[a, b], [b, c]] -> [a, b, c] (argparse nargs='+' of comma lists)."""
    out = []
    for group in groups:
        for item in (group if isinstance(group, (list, tuple)) else [group]):
            if item not in out:
                out.append(item)
    return out
