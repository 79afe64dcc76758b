"""Drop-in replacements for torch.nn.LSTMCell, GRUCell and RNNCell (tanh, relu).

They subclass the torch cells, so constructor, parameters, initialisation, state_dict,
repr and pickling are torch's own. A call that the fused path takes (the checks below,
which are torch's own conditions for a valid call) runs one step through
fusedrnn.ops.cell_step on the chosen backend; every other call — bad input, an empty
batch, an unbatched input with a batched state, CPU autocast — is torch.nn's forward,
so errors, messages and edge cases are torch's.

Dimensions: B batch, I input_size, H hidden_size, G gates (LSTM 4, GRU 3, RNN 1).
"""
from __future__ import annotations

import sys
import warnings

import torch
from torch import nn

from . import backends, decode_memo, regularisers, settings
from .decode_memo import MEMO
from .module_base import FusedModuleBase
from .nn import check_reset_after
from .ops import GATES, cell_step, library
from .ops.common import GRU_RESET_BEFORE, TORCH_CELLS

_warned: set = set()


class _FusedCellBase(FusedModuleBase):
    """Mixin placed before the torch cell class."""

    @property
    def cell(self) -> str:
        return self._CELL

    def choose_backend(self, input, hx=None, warn: bool = True) -> backends.Choice:
        """Which backend `self(input, hx)` runs, and why (fusedrnn.explain)."""
        why_torch = self._torch_runs_it(input)
        if why_torch is not None:
            return backends.Choice("torch", why_torch)
        return backends.choose(self.backend, input.device, self.cell, input.dtype, self.hidden_size, 0, warn=warn,
                               batch=self._batch(input), steps=1, grad=self._records_grad(input, hx),
                               regularised=self._regularised())

    def _torch_runs_it(self, input) -> str | None:
        """Why torch.nn's own forward runs this call whatever the backend, or None."""
        if not isinstance(input, torch.Tensor):
            return "the input is not a tensor; torch.nn reports the error"
        if self.cell not in GATES:
            return f"{self.cell!r} is not a cell fusedrnn runs; torch.nn reports the error"
        if torch._C._is_any_autocast_enabled() and input.device.type == "cpu" and torch.is_autocast_enabled("cpu") \
                and self._torch_computes():
            return _CPU_AUTOCAST
        return None

    def _weights(self) -> tuple:
        """(weight_ih, weight_hh, bias_ih, bias_hh): from the parameter dict (torch.func.functional_call
        swaps its entries), through the attributes where a parametrization replaced them."""
        p = self._parameters
        try:
            return p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]
        except KeyError:
            return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def forward(self, input, hx=None):
        out = self._remembered(input, hx)
        if out is not None:
            return out
        stamp = decode_memo.stamp()  # before the choice: what the choice was made under
        try:
            name = self._backend_name(input, hx)
        except RuntimeError:  # an explicit backend that cannot run: unless torch.nn rejects the call first
            if not self._fused_takes(input, hx, self._weights()):
                return self._torch_forward(input, hx)
            raise
        weights = self._weights()
        if name == "torch" or not self._fused_takes(input, hx, weights):
            return self._torch_forward(input, hx)
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)              # (B, I)
        cell = self._CELL
        is_lstm = cell == "lstm"
        if hx is None:
            h0 = torch.zeros(x.shape[0], self.hidden_size, dtype=x.dtype, device=x.device)
            c0 = h0 if is_lstm else None                          # torch.nn passes one zero tensor twice
        elif is_lstm:
            h0, c0 = hx if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        else:
            h0, c0 = (hx if batched else hx.unsqueeze(0)), None
        masks = self._step_masks(x, h0) if self._regularised() else {}
        h, c = cell_step.step(name, cell, x, h0, c0, *weights, **masks)
        if not masks and not torch.is_grad_enabled() \
                and cell_step.fused_step(name, x, (h0, c0, *weights), cell) is not None:
            # it ran the backend's fused step: the next call of this shape skips the questions above
            self.__dict__[MEMO] = ((input.shape, input.dtype, input.device, *stamp, self.backend, cell),
                                   backends.KERNEL_BACKENDS[name], input.shape[:-1] + (self.hidden_size,))
        if not batched:
            h, c = h.squeeze(0), (c.squeeze(0) if is_lstm else None)
        return (h, c) if is_lstm else h

    def _remembered_call(self, memo, input, hx):
        """forward(input, hx) through the remembered decode path (fusedrnn/decode_memo.py), or None
        where the call is not one it covers. The same step the full path runs, without its questions."""
        key, kernels, state_shape = memo
        if type(input) is not torch.Tensor or (torch.is_grad_enabled() and input.requires_grad) \
                or not decode_memo.plain_eager():
            return None
        dtype, device = input.dtype, input.device
        cell = self._CELL
        if (input.shape, dtype, device, settings.generation, backends.epoch, self.backend, cell) != key:
            return None
        p = self._parameters
        try:
            weights = p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]
        except KeyError:  # a parametrization: the full path reads the attributes
            return None
        is_lstm = cell == "lstm"
        if hx is None:
            states = ()
        elif is_lstm:
            if type(hx) is not tuple and type(hx) is not list or len(hx) != 2:
                return None
            states = hx
        else:
            states = (hx,)
        for s in states:
            if not decode_memo.state_ok(s, state_shape, dtype, device):
                return None
        if not decode_memo.same_device_and_dtype(weights, dtype, device) \
                or decode_memo.records_grad((input, *states, *weights)):
            return None
        step = getattr(sys.modules.get(kernels), "step", None)
        if step is None:
            return None
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        if hx is None:
            h0 = torch.zeros(x.shape[0], self.hidden_size, dtype=dtype, device=device)
            c0 = h0 if is_lstm else None
        elif batched:
            h0, c0 = states if is_lstm else (hx, None)
        else:
            h0, c0 = states[0].unsqueeze(0), (states[1].unsqueeze(0) if is_lstm else None)
        with library.one_launch_at_a_time():
            h, c = step(cell, x, h0, c0, *weights)
        if not batched:
            h, c = h.squeeze(0), (c.squeeze(0) if is_lstm else None)
        return (h, c) if is_lstm else h

    _OWN_FORWARD = forward

    def _step_masks(self, x, h0) -> dict:
        """One step's regulariser masks (fusedrnn/regularisers.py, T = 1, D = 1): fresh zoneout masks
        each call; the recurrent-dropout mask is one per sequence: drawn at the first training call,
        reused while the batch, device and dtype stay the same, until reset_recurrent_dropout_mask()."""
        regs = self.regularisers
        drop = self.__dict__.get("_recurrent_mask")
        want = (h0.shape, h0.device, regularisers.mask_dtype(x.dtype))
        keep_drop = drop is not None and (drop.shape, drop.device, drop.dtype) == want
        masks = regularisers.layer_masks(regs._replace(recurrent_dropout=0.0 if keep_drop else regs.recurrent_dropout),
                                         self.training, 1, x.shape[0], 1, self.hidden_size, self.hidden_size,
                                         self._CELL == "lstm", x.device, x.dtype)
        if self.training and regs.recurrent_dropout:
            if not keep_drop:
                drop = self.__dict__["_recurrent_mask"] = masks.drop_h
            masks = masks._replace(drop_h=drop)
        return masks.kwargs()

    def reset_recurrent_dropout_mask(self) -> None:
        """Start a new sequence: the next training call draws a new recurrent-dropout mask."""
        self.__dict__.pop("_recurrent_mask", None)

    def _torch_forward(self, input, hx):
        """torch.nn's forward: its result, or its error for a call it rejects. A cell torch.nn does
        not compute (GRU with reset_after=False) gets only torch.nn's errors and empty results."""
        out = super().forward(input, hx)
        if self._torch_computes() or (out[0] if isinstance(out, tuple) else out).numel() == 0:
            return out
        why = backends.no_torch_twin(self.cell) if self.cell not in TORCH_CELLS else backends.NO_TORCH_REGULARISERS
        raise RuntimeError(f"fusedrnn.{type(self).__name__} cannot run this call: "
                           f"{why}, and they take an input and state of the parameters' dtype and device")

    def _backend_name(self, input, hx) -> str:
        """choose_backend(input, hx).name, as a constant under torch.compile."""
        why_torch = self._torch_runs_it(input)
        if why_torch is not None:
            if why_torch is _CPU_AUTOCAST and self.backend != "auto" and self.backend not in _warned:
                _warned.add(self.backend)
                warnings.warn(f"fusedrnn: {_CPU_AUTOCAST} (backend {self.backend!r} was requested)",
                              RuntimeWarning, stacklevel=3)
            return "torch"
        return backends.choose_name(self.backend, input.device, self.cell, input.dtype, self.hidden_size, 0,
                                    self._batch(input), 1, self._records_grad(input, hx), 1, self._regularised())

    @staticmethod
    def _batch(input) -> int | None:
        return backends.table_sizes(input.shape[0] if input.dim() == 2 else 1, 1)[0]

    def _records_grad(self, input, hx=None) -> bool:
        """Whether autograd records this call (the dispatch table's "fwbw" rows)."""
        if not torch.is_grad_enabled():
            return False
        states = hx if isinstance(hx, (tuple, list)) else (hx,)
        return input.requires_grad or self.weight_hh.requires_grad or any(
            isinstance(s, torch.Tensor) and s.requires_grad for s in states)

    def _fused_takes(self, input, hx, weights) -> bool:
        """True when the call is one torch.nn accepts and the fused path computes exactly:
        a non-empty 1-D or 2-D input on the parameters' device, input and every parameter (biases
        included) of one dtype (under CUDA autocast: each float32 or the autocast dtype), and a
        state of the same rank, sizes, dtype and device. `weights`: self._weights()."""
        w_ih, w, b_ih, b_hh = weights
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size or input.numel() == 0 \
                or self.hidden_size == 0 or input.device != w.device:
            return False
        # under CUDA autocast torch casts the float arguments to the autocast dtype; fusedrnn.ops.run
        # casts float32 ones: the arguments must be float32 or already in that dtype
        dtypes = (torch.float32, torch.get_autocast_dtype("cuda")) \
            if torch._C._is_any_autocast_enabled() and input.device.type == "cuda" \
            and torch.is_autocast_enabled("cuda") else (w.dtype,)
        # biases too: torch.nn refuses another dtype
        if input.dtype not in dtypes or w_ih.dtype not in dtypes or (b_ih is not None and b_ih.dtype not in dtypes) \
                or (b_hh is not None and b_hh.dtype not in dtypes):
            return False
        if hx is None:
            return True
        if self._CELL == "lstm":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                return False
            states = hx
        else:
            states = (hx,)
        want = (input.shape[0], self.hidden_size) if input.dim() == 2 else (self.hidden_size,)
        return all(isinstance(s, torch.Tensor) and s.shape == want and s.device == input.device
                   and s.dtype in dtypes for s in states)


_CPU_AUTOCAST = ("under CPU autocast a cell runs torch.nn's own implementation, whose output dtypes "
                 "follow torch's type promotion")


class LSTMCell(_FusedCellBase, nn.LSTMCell):
    """torch.nn.LSTMCell with fused kernels; extra keyword-only arguments `backend`, and `zoneout`,
    `zoneout_cell`, `recurrent_dropout` (fusedrnn/regularisers.py; the recurrent-dropout mask is
    kept across calls until reset_recurrent_dropout_mask())."""

    _CELL = "lstm"


class GRUCell(_FusedCellBase, nn.GRUCell):
    """torch.nn.GRUCell with fused kernels; extra keyword-only arguments `backend`,
    `reset_after` (False: the reset gate before the recurrent product, see fusedrnn.GRU), and
    `zoneout`, `recurrent_dropout` (as fusedrnn.LSTMCell)."""

    reset_after = True  # a class default: a torch.nn.GRUCell converted in place keeps torch's formula

    def __init__(self, *args, reset_after: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset_after = check_reset_after(reset_after)

    @property
    def _CELL(self) -> str:  # noqa: N802  (a per-instance value: the formula)
        return "gru" if self.reset_after else GRU_RESET_BEFORE

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.reset_after else s + ", reset_after=False"


class RNNCell(_FusedCellBase, nn.RNNCell):
    """torch.nn.RNNCell (tanh or relu) with fused kernels; extra keyword-only arguments `backend`,
    and `zoneout`, `recurrent_dropout` (as fusedrnn.LSTMCell)."""

    @property
    def _CELL(self) -> str:  # noqa: N802  (a per-instance value: the nonlinearity)
        return f"rnn_{self.nonlinearity}"

    def _fused_takes(self, input, hx, weights) -> bool:
        return self.nonlinearity in ("tanh", "relu") and super()._fused_takes(input, hx, weights)
