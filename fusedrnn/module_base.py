"""What every fusedrnn module adds to the torch.nn class it subclasses: the keyword-only
`backend` attribute, the regularisers (`zoneout`, `zoneout_cell`, `recurrent_dropout`,
fusedrnn/regularisers.py), their repr, and the hand-over to TorchScript.

Placed before the torch class in the bases (`class LSTM(_FusedRNNBase, nn.LSTM)`), so
constructor, parameters, initialisation, state_dict and pickling stay torch's own; the
attributes added to an instance are the backend name (kept in `__dict__`) and the
regularisers' probabilities (class defaults 0.0, so a torch.nn object whose class is swapped
in place by fusedrnn.convert needs nothing else and computes exactly what it did).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from . import backends, regularisers
from .cell_table import CELLS
from .decode_memo import MEMO
from .ops.common import TORCH_CELLS

#: the torch.nn classes fusedrnn has a twin of (sequence modules and cells)
TORCH_CLASSES = (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell)


def _option(index: int, name: str) -> property:
    """A regulariser's probability as an attribute, checked when set (as at construction)."""
    def get(self) -> float:
        return self.regularisers[index]

    def set_(self, p) -> None:
        regs = self.regularisers._replace(**{name: p})
        self._set_regularisers(regularisers.checked(type(self).__name__, self._has_c(), *regs))

    return property(get, set_, doc=f"the {name} probability (fusedrnn/regularisers.py)")


class FusedModuleBase:
    """Mixin of fusedrnn.LSTM/GRU/RNN and the cells. A subclass that is itself a fused
    mixin sets `_OWN_FORWARD = forward` so TorchScript can tell a user's override."""

    _OWN_FORWARD = None
    zoneout = _option(0, "zoneout")
    zoneout_cell = _option(1, "zoneout_cell")
    recurrent_dropout = _option(2, "recurrent_dropout")

    def __init__(self, *args, backend: str = "auto", zoneout: float = 0.0, zoneout_cell: float = 0.0,
                 recurrent_dropout: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend
        regs = regularisers.checked(type(self).__name__, self._has_c(), zoneout, zoneout_cell, recurrent_dropout)
        if any(regs):  # only then kept in the instance: p = 0 leaves the instance as torch.nn's
            self._set_regularisers(regs)

    def _has_c(self) -> bool:
        return CELLS[self.cell].has_c if self.cell in CELLS else False

    def _set_regularisers(self, regs: regularisers.Regularisers) -> None:
        # the probabilities, and whether each is on as plain bools: torch.compile may trace a
        # module's float attribute as a symbolic value, but the backend choice needs constants.
        # Plain tuples: torch.load(weights_only=True) of a whole module unpickles them as they are
        self.__dict__["_regularisers"] = tuple(regs)
        self.__dict__["_regularisers_on"] = tuple(bool(p > 0) for p in regs)

    @property
    def regularisers(self) -> regularisers.Regularisers:
        """(zoneout, zoneout_cell, recurrent_dropout); all 0 for a module converted from torch.nn."""
        return regularisers.Regularisers(*self.__dict__.get("_regularisers", regularisers.NONE))

    def _regularised(self) -> bool:
        """Whether this call computes more than the plain cell (zoneout; recurrent dropout in training)."""
        on = self.__dict__.get("_regularisers_on")
        return on is not None and (on[0] or on[1] or (self.training and on[2]))

    def _torch_computes(self) -> bool:
        """Whether torch.nn's forward computes this module's function in its current mode."""
        return self.cell in TORCH_CELLS and not self._regularised()

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
        # a regularised module draws masks every call: it always takes the full path
        return None if memo is None or self._regularised() else self._remembered_call(memo, input, hx)

    @classmethod
    def torch_class(cls) -> type:
        return next(c for c in cls.__mro__ if c in TORCH_CLASSES)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        for name, p in zip(regularisers.OPTIONS, self.regularisers):
            if p:
                s += f", {name}={p}"
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
        if any(self.regularisers):  # the twin would drop them
            raise RuntimeError(f"torch.jit.script: fusedrnn.{torch_cls.__name__} with zoneout or recurrent dropout "
                               f"has no torch.nn twin to script ({backends.NO_TORCH_REGULARISERS}); use "
                               "torch.compile, torch.export or torch.jit.trace")
        warnings.warn(f"torch.jit.script runs fusedrnn.{torch_cls.__name__} as torch.nn.{torch_cls.__name__} "
                      "(TorchScript cannot compile fusedrnn's kernel dispatch), and puts that torch.nn module, "
                      "with the same parameters, in its place inside the model being scripted; "
                      "fusedrnn.convert(model) puts the fusedrnn module back", UserWarning, stacklevel=3)
        twin = torch_cls.__new__(torch_cls)
        twin.__dict__.update(self.__dict__)  # the same parameter, buffer and hook dicts, and the backend name
        twin.__dict__.pop(MEMO, None)
        return twin

