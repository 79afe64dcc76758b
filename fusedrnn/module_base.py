"""What every fusedrnn module adds to the torch.nn class it subclasses: the keyword-only
`backend` attribute, its repr, and the hand-over to TorchScript.

Placed before the torch class in the bases (`class LSTM(_FusedRNNBase, nn.LSTM)`), so
constructor, parameters, initialisation, state_dict and pickling stay torch's own; the
only attribute added to an instance is the backend name (kept in `__dict__`, so a
torch.nn object whose class is swapped in place by fusedrnn.convert needs nothing else).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from . import backends
from .decode_memo import MEMO
from .ops.common import TORCH_CELLS

#: the torch.nn classes fusedrnn has a twin of (sequence modules and cells)
TORCH_CLASSES = (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell)


class FusedModuleBase:
    """Mixin of fusedrnn.LSTM/GRU/RNN and the cells. A subclass that is itself a fused
    mixin sets `_OWN_FORWARD = forward` so TorchScript can tell a user's override."""

    _OWN_FORWARD = None

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend

    @property
    def backend(self) -> str:
        return self.__dict__.get("_backend", "auto")

    @backend.setter
    def backend(self, name: str) -> None:
        backends.check_name(name)
        self.__dict__["_backend"] = name
        self.__dict__.pop(MEMO, None)

    def __getstate__(self):
        """The state pickling and copying take: without the remembered decode path (a cache of
        this process's backend choice, fusedrnn/decode_memo.py)."""
        state = dict(super().__getstate__())
        state.pop(MEMO, None)
        return state

    def _remembered(self, input, hx):
        """The call's result through the module's remembered path (fusedrnn/decode_memo.py), or
        None where it has none or the call is not one it covers."""
        if torch.compiler.is_compiling():  # a graph never reads the memo (nor guards on it)
            return None
        memo = self.__dict__.get(MEMO)
        return None if memo is None else self._remembered_call(memo, input, hx)

    @classmethod
    def torch_class(cls) -> type:
        return next(c for c in cls.__mro__ if c in TORCH_CLASSES)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.backend == "auto" else s + f", backend={self.backend!r}"

    def __prepare_scriptable__(self):
        """torch.jit.script cannot compile fusedrnn's Python dispatch to its kernels: it gets the
        torch.nn module (nn.LSTM, nn.LSTMCell, ...) holding the very same parameters instead, so a
        scripted fusedrnn module runs torch.nn's implementation (cuDNN on a GPU). TorchScript also
        writes that twin into the parent of each module it prepares: the twin keeps the backend
        name, so fusedrnn.convert(model) restores the module as it was. A subclass with a forward
        of its own cannot be handed over that way and is refused."""
        if type(self).forward is not type(self)._OWN_FORWARD:
            raise RuntimeError(f"torch.jit.script: {type(self).__qualname__} overrides forward, which TorchScript "
                               "cannot compile on top of fusedrnn; script a model whose RNN modules are plain "
                               "fusedrnn modules (they script as their torch.nn twins), or use torch.compile")
        torch_cls = self.torch_class()
        if self.cell not in TORCH_CELLS:  # its twin would compute torch.nn's formula, another function
            raise RuntimeError(f"torch.jit.script: fusedrnn.{torch_cls.__name__} with reset_after=False has no "
                               f"torch.nn twin to script ({backends.no_torch_twin(self.cell)}); use torch.compile, "
                               "torch.export or torch.jit.trace")
        warnings.warn(f"torch.jit.script runs fusedrnn.{torch_cls.__name__} as torch.nn.{torch_cls.__name__} "
                      "(TorchScript cannot compile fusedrnn's kernel dispatch), and puts that torch.nn module, "
                      "with the same parameters, in its place inside the model being scripted; "
                      "fusedrnn.convert(model) puts the fusedrnn module back", UserWarning, stacklevel=3)
        twin = torch_cls.__new__(torch_cls)
        twin.__dict__.update(self.__dict__)  # the same parameter, buffer and hook dicts, and the backend name
        twin.__dict__.pop(MEMO, None)
        return twin
