"""fusedrnn: fused LSTM, GRU and vanilla-RNN kernels behind drop-in torch.nn modules."""
import torch

from . import ops
from .backends import BACKENDS, available_backends
from .cells import GRUCell, LSTMCell, RNNCell
from .conversion import ConvertWarning, convert
from .decoding import CapturedStep
from .nn import GRU, LSTM, RNN, explain
from .ops.timeouts import watch as watch_timeouts


def check_timeouts(block: bool = True) -> None:
    """Raise RuntimeError if an earlier kernel launch (either kernel backend) timed out in a wait
    for its other CTAs or programs; block=True waits for every launch so far. Unchecked eager
    launches are otherwise reported at the next launch (docs/integration.md, "Timeouts")."""
    from .ops import timeouts  # noqa: PLC0415
    timeouts.check(block)


__version__ = "0.1.0"
__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "convert", "ConvertWarning", "CapturedStep",
           "explain", "available_backends", "BACKENDS", "ops", "check_timeouts", "watch_timeouts"]

# torch.load's default (weights_only=True) unpickles only allowlisted classes: with these, a
# model made of torch.nn and fusedrnn modules loads with torch.load(path) alone
torch.serialization.add_safe_globals([LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell])
