"""fusedrnn: fused LSTM, GRU and vanilla-RNN kernels behind drop-in torch.nn modules."""
from . import ops
from .backends import BACKENDS, available_backends
from .nn import GRU, LSTM, RNN, convert, explain

__version__ = "0.1.0"
__all__ = ["LSTM", "GRU", "RNN", "convert", "explain", "available_backends", "BACKENDS", "ops"]
