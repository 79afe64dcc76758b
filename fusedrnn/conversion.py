"""fusedrnn.convert: turn the torch.nn RNN modules and cells inside a model into fusedrnn ones, in place.

A torch.nn.LSTM/GRU/RNN/LSTMCell/GRUCell/RNNCell object becomes its fusedrnn twin by changing its class in place
(the twin adds methods, no attributes of its own but the backend name), so the object
keeps its identity: every reference to it (a module shared by two parents, an optimizer's
parameters, hook handles, a `functools.partial`) sees the converted module.
"""
from __future__ import annotations

import warnings

from torch import nn

from . import backends
from .cells import GRUCell, LSTMCell, RNNCell
from .module_base import FusedModuleBase
from .nn import GRU, LSTM, RNN, _let_dynamo_trace_rnn_modules

_TWINS = {nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN, nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell, nn.RNNCell: RNNCell}


class ConvertWarning(UserWarning):
    """fusedrnn.convert left some torch.nn RNN modules to torch.nn; the message says which and why."""


def convert(model: nn.Module, backend: str | None = None) -> nn.Module:
    """Make every torch.nn.LSTM/GRU/RNN and LSTMCell/GRUCell/RNNCell inside `model` (or `model`
    itself) a fusedrnn module, in place.

    Each module object is converted once, however many names refer to it, and stays the
    same object: parameters, buffers, hooks (and their handles), sharing between parents
    and optimizer state are untouched. Modules that already are fusedrnn modules get
    `backend` when one is given (else they keep theirs); converted ones get `backend` or
    "auto" (or, for a torch.nn twin that torch.jit.script put in a fusedrnn module's
    place, that module's backend).

    Left alone, with a ConvertWarning naming each: subclasses of the torch.nn RNN and cell
    classes (their own code may rely on torch.nn's implementation; derive them from
    fusedrnn.LSTM/GRU/RNN/LSTMCell/... instead) and bare torch.nn.RNNBase / RNNCellBase modules.

    Returns `model`.
    """
    if backend is not None:
        backends.check_name(backend)
    left_alone = []
    for name, module in model.named_modules():  # each object once, even when shared
        if isinstance(module, FusedModuleBase):
            if backend is not None:
                module.backend = backend
        elif type(module) in _TWINS:
            # a module torch.jit.script put in a fusedrnn module's place still has its backend name
            was = module.__dict__.get("_backend", "auto")
            module.__class__ = _TWINS[type(module)]
            module.backend = backend or was
            if isinstance(module, nn.RNNBase):
                _let_dynamo_trace_rnn_modules()
        elif isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
            left_alone.append(f"{name or 'the model itself'} ({type(module).__qualname__}): {_why_not(module)}")
    if left_alone:
        warnings.warn("fusedrnn.convert left these modules to torch.nn: " + "; ".join(left_alone),
                      ConvertWarning, stacklevel=2)
    return model


def _why_not(module: nn.Module) -> str:
    base = next((c for c in type(module).__mro__ if c in _TWINS), None)
    if base is None:
        bare = next(c for c in type(module).__mro__ if c in (nn.RNNBase, nn.RNNCellBase))
        twins = "LSTM/GRU/RNN" if bare is nn.RNNBase else "LSTMCell/GRUCell/RNNCell"
        return f"a bare torch.nn.{bare.__name__} has no fusedrnn twin; build torch.nn.{twins} instead"
    return (f"a subclass of torch.nn.{base.__name__}, whose own code may rely on torch.nn's "
            f"implementation; derive it from fusedrnn.{base.__name__} to run the fused kernels")
