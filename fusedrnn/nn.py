"""Drop-in replacements for torch.nn.LSTM, GRU and RNN.

They subclass the torch modules, so constructor, parameters, initialisation,
state_dict, repr, pickling and the argument checks are torch's own; only the
forward pass is rerouted through fusedrnn.functional when the chosen backend is
not "torch".
"""
from __future__ import annotations

import sys

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import backends, decode_memo, functional, packing, settings
from .decode_memo import MEMO
from .functional import LayerWeights
from .module_base import FusedModuleBase
from .ops.common import GRU_RESET_BEFORE, TORCH_CELLS

_CELLS = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}


class _FusedRNNBase(FusedModuleBase):
    """Mixin placed before the torch class; `backend` picks the implementation per call."""

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, backend=backend, **kwargs)
        _let_dynamo_trace_rnn_modules()

    def __setstate__(self, state):
        super().__setstate__(state)
        _let_dynamo_trace_rnn_modules()

    @property
    def cell(self) -> str:
        return _CELLS[self.mode]

    def choose_backend(self, input, warn: bool = True) -> backends.Choice:
        data = input.data if isinstance(input, PackedSequence) else input
        if not isinstance(data, torch.Tensor):
            return backends.Choice("torch", "the input is not a tensor; torch.nn reports the error")
        batch, steps = self._call_sizes(input)
        return backends.choose(self.backend, data.device, self.cell, data.dtype, self.hidden_size,
                               self.proj_size, warn=warn, batch=batch, steps=steps, grad=self._records_grad(data),
                               directions=2 if self.bidirectional else 1, regularised=self._regularised())

    def forward(self, input, hx=None):
        out = self._remembered(input, hx)
        if out is not None:
            return out
        stamp = decode_memo.stamp()  # before the choice: what the choice was made under
        if self._torch_rejects_dtype(input):
            return super().forward(input, hx)  # raises torch.nn's own error, before any backend is chosen
        name = self._backend_name(input)
        # an empty padded input (no steps: torch's error; no sequences: empty outputs) computes
        # nothing, so torch.nn's own handling of it is exact
        empty = isinstance(input, torch.Tensor) and input.dim() in (2, 3) and input.numel() == 0
        if name == "torch" or empty:
            return super().forward(input, hx)
        return self._fused_forward(input, hx, name, stamp)

    _OWN_FORWARD = forward

    def _torch_rejects_dtype(self, input) -> bool:
        """True when torch.nn's forward is certain to reject `input` in Python, before its kernel:
        an input dtype other than the weights' (outside autocast). torch.nn.LSTM checks nothing
        for a PackedSequence (its kernel fails, or crashes), so that case stays on the fused path,
        which applies torch's checks."""
        data = input.data if isinstance(input, PackedSequence) else input
        if not isinstance(data, torch.Tensor) or (isinstance(input, PackedSequence) and self.mode == "LSTM"):
            return False
        return data.dtype != self._flat_weights[0].dtype and not torch._C._is_any_autocast_enabled()

    def _weight_of_another_dtype(self, dtype) -> bool:
        """True outside autocast when a weight or bias has a dtype other than the input's (torch.nn's
        Python check covers only the first weight, its kernels the rest)."""
        return not torch._C._is_any_autocast_enabled() and any(
            w is not None and w.dtype != dtype for w in self._flat_weights)

    def _backend_name(self, input) -> str:
        """choose_backend(input).name, as a constant under torch.compile (see backends.choose_name)."""
        data = input.data if isinstance(input, PackedSequence) else input
        if not isinstance(data, torch.Tensor):
            return "torch"
        return backends.choose_name(self.backend, data.device, self.cell, data.dtype, self.hidden_size,
                                    self.proj_size, *self._call_sizes(input), self._records_grad(data),
                                    2 if self.bidirectional else 1, self._regularised())

    def _call_sizes(self, input) -> tuple:
        """(batch, steps) of a call for the dispatch table: plain ints, or None where unknown
        (a dynamic size under torch.compile, a malformed input)."""
        if isinstance(input, PackedSequence):
            sizes = input.batch_sizes
            if sizes.dim() != 1 or not len(sizes) or sizes.is_floating_point() or torch.compiler.is_compiling():
                return None, None
            return int(sizes[0]), len(sizes)
        if input.dim() == 2:
            return backends.table_sizes(1, input.shape[0])
        if input.dim() == 3:
            b, t = (0, 1) if self.batch_first else (1, 0)
            return backends.table_sizes(input.shape[b], input.shape[t])
        return None, None

    def _records_grad(self, data) -> bool:
        """Whether autograd records this call (the dispatch table's "fwbw" rows)."""
        return torch.is_grad_enabled() and (data.requires_grad or any(
            w is not None and w.requires_grad for w in self._flat_weights))

    # -- the fused path -------------------------------------------------------------

    def _update_flat_weights(self) -> None:
        """torch.nn's, which every forward runs (its list of weights follows a swapped parameter or
        functional_call), with the common case first: each weight is still the very parameter its
        list holds, read from the parameter dict (torch's own check looks each one up as an
        attribute, ~3 µs apiece on a CPU). Anything else — a swapped weight, a parametrization,
        whose weights are attributes outside the dict — takes torch's own check."""
        params = self._parameters
        for ref, name in zip(self._flat_weight_refs, self._flat_weights_names):
            if ref is None or params.get(name) is not ref():
                super()._update_flat_weights()
                return

    def _layer_weights(self) -> list[LayerWeights]:
        """LayerWeights per layer and direction, in torch's order, from torch's own list of the
        weights (refreshed as torch.nn's forward refreshes it, e.g. under functional_call)."""
        self._update_flat_weights()
        per = 2 + 2 * bool(self.bias) + (self.proj_size > 0)
        out = []
        ws = self._flat_weights
        for k in range(0, len(ws), per):
            w_ih, w_hh, *rest = ws[k:k + per]
            b_ih, b_hh = (rest[0], rest[1]) if self.bias else (None, None)
            out.append(LayerWeights(w_ih, w_hh, b_ih, b_hh, rest[-1] if self.proj_size > 0 else None))
        return out

    def _zero_state(self, batch, like: torch.Tensor):
        """Zero h0 (and c0) as torch.nn builds them; `batch` may be a 0-d tensor, as in torch."""
        D = 2 if self.bidirectional else 1
        P = self.proj_size if self.proj_size > 0 else self.hidden_size
        h = torch.zeros(self.num_layers * D, batch, P, dtype=like.dtype, device=like.device)
        if self.mode != "LSTM":
            return h
        return h, torch.zeros(self.num_layers * D, batch, self.hidden_size, dtype=like.dtype, device=like.device)

    def _check_state_dims(self, hx, want: int) -> None:
        """torch.nn's messages for an hx whose rank does not match the input's."""
        kind = "batched 3-D" if want == 3 else "unbatched 2-D"
        if self.mode == "LSTM":
            if hx[0].dim() != want or hx[1].dim() != want:
                raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got "
                                   f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
        elif hx.dim() != want:
            raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got {hx.dim()}-D tensor")

    def _checked_packed_state(self, data, batch_sizes, hx, sorted_indices):
        """torch.nn's errors for a packed batch, in torch's order: what its Python code raises
        (indexing batch_sizes, building the zero state, permuting hx, check_forward_args), then
        what its kernel refuses (packing.check_batch_sizes). torch.nn.LSTM has no Python checks
        for a packed batch: its kernel's come first, and fusedrnn then applies check_forward_args
        (torch would crash on some bad states instead). Returns the state in packed order."""
        max_batch_size = batch_sizes[0]  # IndexError for an empty or 0-d batch_sizes
        if hx is None:
            hx = self._zero_state(max_batch_size, data)  # TypeError for a float or 2-D batch_sizes
        else:
            hx = self.permute_hidden(hx, sorted_indices)
        if self.mode == "LSTM":
            if not isinstance(hx, tuple):
                raise TypeError(f"lstm() received an invalid combination of arguments: hx must be a tuple "
                                f"of Tensors (h_0, c_0), got {type(hx).__name__}")
            hx[0].size(2), hx[1].size(2)  # noqa: B018  torch's IndexError for a state of fewer than 3 dims
            packing.check_batch_sizes(data, batch_sizes)
            self.check_forward_args(data, hx, batch_sizes)
        else:
            self.check_forward_args(data, hx, batch_sizes)
            packing.check_batch_sizes(data, batch_sizes)
        return hx

    def _fused_forward(self, input, hx, backend: str, stamp: tuple | None = None):
        call = (input, hx)
        is_lstm = self.mode == "LSTM"
        packed = isinstance(input, PackedSequence)
        lengths = valid = None
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            state = self._checked_packed_state(data, batch_sizes, hx, sorted_indices)
            if int(batch_sizes[0]) == 0:  # no sequences at all: torch.nn's own answer (an error or empty output)
                return super().forward(input, hx)
            hx = state
            x, lengths, valid = packing.unpack(data, batch_sizes)
        else:
            if input.dim() not in (2, 3):
                tail = " tensor instead" if self.mode.startswith("RNN") else " instead"
                raise ValueError(f"{self.mode.split('_')[0]}: Expected input to be 2D or 3D, got {input.dim()}D{tail}")
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            if hx is None:
                hx = self._zero_state(input.size(batch_dim), input)
            else:
                self._check_state_dims(hx, 3 if is_batched else 2)
                if not is_batched:
                    hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1)) if is_lstm else hx.unsqueeze(1)
            self.check_forward_args(input, hx, None)
            x = input.transpose(0, 1) if self.batch_first else input
        h0, c0 = hx if is_lstm else (hx, None)
        # torch.nn's messages, raised before anything runs on either device
        device = x.device
        for p in self._flat_weights:
            if p is not None and p.device != device:
                raise RuntimeError(f"Input and parameter tensors are not at the same device, found input "
                                   f"tensor at {x.device} and parameter tensor at {p.device}")
        for h in (h0, c0):
            if h is not None and h.device != device:
                raise RuntimeError(f"Input and hidden tensors are not at the same device, found input "
                                   f"tensor at {x.device} and hidden tensor at {h.device}")
        if h0.dtype != x.dtype or (c0 is not None and c0.dtype != x.dtype):
            raise RuntimeError(f"Input and hidden tensors are not the same dtype, found input tensor with "
                               f"{x.dtype} and hidden tensor with {(h0 if h0.dtype != x.dtype else c0).dtype}")
        if self._weight_of_another_dtype(x.dtype):
            # torch.nn's kernels decide (a RuntimeError naming the two dtypes, or a result where its
            # CPU LSTM casts): the fused path would cast silently; the state was checked above, so
            # even a packed LSTM reaches torch's kernel with a valid state
            out = super().forward(*call)
            if not self._torch_computes():  # torch.nn computed its own function, not this module's
                why = backends.no_torch_twin(self.cell) if self.cell not in TORCH_CELLS \
                    else backends.NO_TORCH_REGULARISERS
                raise RuntimeError(f"fusedrnn.{type(self).__name__}: {why}, and "
                                   f"every weight must have the input's dtype ({x.dtype}) for them to run it")
            return out
        weights = self._layer_weights()
        # a regularised call never takes the fused step (functional.rnn): nothing to ask
        step = None if self.regularisers.active(self.training) else \
            functional.decode_step(backend, self.cell, x, h0, c0, weights)
        if not packed and stamp is not None:
            self._remember(call, backend, stamp, weights, h0, c0, is_batched, x.shape[0] == 1)
        y, h_n, c_n = functional.rnn(
            self.cell, x, h0, c0, weights, num_layers=self.num_layers,
            bidirectional=self.bidirectional, dropout=self.dropout, training=self.training,
            lengths=lengths, dropout_mask=valid, backend=backend, step=step, regs=self.regularisers)
        if torch._C._is_any_autocast_enabled() and x.device.type == "cpu" and torch.is_autocast_enabled("cpu") \
                and self._flat_weights[0].dtype == torch.float32:
            y, h_n, c_n = _cpu_autocast_result(self.mode, self.proj_size > 0, packed, y, h_n, c_n)
        hidden = (h_n, c_n) if is_lstm else h_n
        if packed:
            out = PackedSequence(packing.pack(y, valid), batch_sizes, sorted_indices, unsorted_indices)
            return out, self.permute_hidden(hidden, unsorted_indices)
        return self._padded_outputs(y, h_n, c_n, is_batched, batch_dim)

    def _padded_outputs(self, y, h_n, c_n, is_batched: bool, batch_dim: int):
        """(output, hidden) of a padded call as torch.nn returns them, from functional.rnn's
        time-major y and the states."""
        hidden = (h_n, c_n) if c_n is not None else h_n
        if self.batch_first:
            y = y.transpose(0, 1)
        if not is_batched:
            y = y.squeeze(batch_dim)
            hidden = (h_n.squeeze(1), c_n.squeeze(1)) if c_n is not None else h_n.squeeze(1)
        return y, hidden

    # -- the remembered path of a padded call (fusedrnn/decode_memo.py) ----------------

    def _remember(self, call, backend: str, stamp: tuple, weights, h0, c0, is_batched: bool, one_step: bool) -> None:
        """Remember how `call` (input, hx), a padded call that passed torch.nn's checks, runs:
        backend `backend` on `weights` (_layer_weights()) with the checked state h0 (L*D,B,P),
        c0 (L*D,B,H) or None. Only a plain eager call whose weights are its parameters (not a
        parametrization's: a new tensor per read)."""
        input = call[0]
        params = self._parameters
        flat = tuple(self._flat_weights)
        names = tuple(self._flat_weights_names)
        if type(input) is not torch.Tensor or not decode_memo.plain_eager() or self._regularised() \
                or any(params.get(n) is not w for n, w in zip(names, flat)):
            return
        states = (h0,) if c0 is None else (h0, c0)
        shapes = tuple(s.shape if is_batched else s.shape[:1] + s.shape[2:] for s in states)
        key = (input.shape, input.dtype, input.device, *stamp, self.backend, self.cell, self.batch_first,
               decode_memo.records_grad((input, *flat)))
        # the backend's fused step where functional.decode_step may give it (one step, no projection)
        steps = one_step and weights[0].w_hr is None and backend in backends.KERNEL_BACKENDS \
            and self.cell != GRU_RESET_BEFORE
        self.__dict__[MEMO] = (key, backend, backends.KERNEL_BACKENDS[backend] if steps else None, shapes, names,
                               flat, weights)

    def _remembered_call(self, memo, input, hx):
        """forward(input, hx) through the remembered path, or None where the call is not one it
        covers: the same functional.rnn call the full path makes, without its questions."""
        key, backend, kernels, shapes, names, flat, weights = memo
        if type(input) is not torch.Tensor or not decode_memo.plain_eager():
            return None
        dtype, device = input.dtype, input.device
        cell = self.cell
        if (input.shape, dtype, device, settings.generation, backends.epoch, self.backend, cell, self.batch_first,
                decode_memo.records_grad((input, *flat))) != key:
            return None
        is_lstm = cell == "lstm"
        if hx is None:
            states = ()
        elif is_lstm:
            if type(hx) is not tuple or len(hx) != 2:
                return None
            states = hx
        else:
            states = (hx,)
        for s, shape in zip(states, shapes):
            if not decode_memo.state_ok(s, shape, dtype, device):
                return None
        params = self._parameters
        for n, w in zip(names, flat):
            if params.get(n) is not w:
                return None
        if not decode_memo.same_device_and_dtype(flat, dtype, device):
            return None
        # functional.decode_step's answer: the fused step unless autograd records the call
        step = None if kernels is None or key[-1] or decode_memo.records_grad(states) else \
            getattr(sys.modules.get(kernels), "step", None)
        is_batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        x = input if is_batched else input.unsqueeze(batch_dim)
        if hx is None:
            hx = self._zero_state(x.size(batch_dim), x)
        elif not is_batched:
            hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1)) if is_lstm else hx.unsqueeze(1)
        h0, c0 = hx if is_lstm else (hx, None)
        y, h_n, c_n = functional.rnn(
            cell, x.transpose(0, 1) if self.batch_first else x, h0, c0, weights, num_layers=self.num_layers,
            bidirectional=self.bidirectional, dropout=self.dropout, training=self.training, backend=backend,
            step=step)
        return self._padded_outputs(y, h_n, c_n, is_batched, batch_dim)


def check_reset_after(reset_after) -> bool:
    if not isinstance(reset_after, bool):
        raise TypeError(f"fusedrnn: reset_after must be a bool, got {type(reset_after).__name__}")
    return reset_after


def _cpu_autocast_result(mode: str, proj: bool, packed: bool, y, h_n, c_n):
    """Give outputs the dtypes torch.nn returns on the CPU under torch.autocast("cpu", low)
    with float32 parameters: its oneDNN LSTM layer (padded input, no projection) runs
    wholly in `low`; the other paths are composite, where the matmuls autocast and the
    state follows type promotion — RNN state all `low`, GRU state float32, an LSTM's
    cell state float32 (and h too unless a projection matmul produces it).
    tests/test_autocast.py checks this table against torch.nn itself."""
    low, full = y.dtype, torch.float32
    if mode.startswith("RNN"):
        want = (low, low, None)
    elif mode == "GRU":
        want = (full, full, None)
    elif proj:
        want = (low, low, full)
    else:
        want = (full, full, full) if packed else (low, low, low)
    return tuple(t.to(d) if t is not None else None for t, d in zip((y, h_n, c_n), want))


def _let_dynamo_trace_rnn_modules() -> None:
    """torch.compile refuses every instance of nn.RNN/GRU/LSTM, subclasses included, unless
    torch._dynamo.config.allow_rnn is set; fusedrnn's modules need it to compile (with
    fullgraph=True) and set it when one is built or unpickled. Side effect, documented in
    docs/integration.md: plain torch.nn RNN modules are then traced too (torch's experimental
    support) instead of breaking the graph. The setting is context-local in torch."""
    import torch._dynamo  # noqa: PLC0415  (heavy; only once a fusedrnn module exists)
    torch._dynamo.config.allow_rnn = True


class LSTM(_FusedRNNBase, nn.LSTM):
    """torch.nn.LSTM with fused kernels; extra keyword-only arguments `backend`, and `zoneout`,
    `zoneout_cell`, `recurrent_dropout` (probabilities, default 0: fusedrnn/regularisers.py)."""


class GRU(_FusedRNNBase, nn.GRU):
    """torch.nn.GRU with fused kernels; extra keyword-only arguments `backend`, `reset_after`, and
    `zoneout`, `recurrent_dropout` (probabilities, default 0: fusedrnn/regularisers.py).

    reset_after=True (the default) is torch.nn.GRU's (and cuDNN's) formula,
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)); reset_after=False applies the reset gate
    before the recurrent product, as the original GRU: n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn).
    Both have the same parameters (names, shapes, initialisation, state_dict)."""

    reset_after = True  # a class default: a torch.nn.GRU converted in place keeps torch's formula

    def __init__(self, *args, reset_after: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset_after = check_reset_after(reset_after)

    @property
    def cell(self) -> str:
        return "gru" if self.reset_after else GRU_RESET_BEFORE

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.reset_after else s + ", reset_after=False"


class RNN(_FusedRNNBase, nn.RNN):
    """torch.nn.RNN (tanh or relu) with fused kernels; extra keyword-only arguments `backend`, and
    `zoneout`, `recurrent_dropout` (probabilities, default 0: fusedrnn/regularisers.py)."""


def explain(module: nn.Module, input) -> str:
    """Which backend `module(input)` would run and why, or why it would raise (an explicitly
    requested backend that cannot run this input); for a kernel backend also what its kernels
    run of each layer (a projection, both directions in one launch or one per direction).
    Never raises itself."""
    if not isinstance(module, FusedModuleBase):
        return f"{type(module).__name__} is not a fusedrnn module; torch.nn runs it (see fusedrnn.convert)"
    try:
        choice = module.choose_backend(input, warn=False)
    except (RuntimeError, ValueError) as e:  # an explicit backend that cannot run it, a bad FUSEDRNN_BACKEND
        return f"{type(module).__name__} would raise {type(e).__name__}: {e}"
    text = f"{type(module).__name__} would run backend {choice.name!r}: {choice.reason}."
    data = input.data if isinstance(input, PackedSequence) else input
    if choice.name in backends.KERNEL_BACKENDS:
        text += _kernel_layout(module, choice.name, data.dtype)
    if choice.name == "cuda":  # which tier of the CUDA kernels, from the extension's host-side plan
        from .ops import cuda as cuda_ops  # noqa: PLC0415
        batch = (int(input.batch_sizes[0]) if isinstance(input, PackedSequence)
                 else 1 if data.dim() == 2 else data.shape[0 if module.batch_first else 1])
        text += " Plan: " + cuda_ops.describe(module.cell, data.dtype, batch, module.hidden_size, data.device) + "."
    return text


def _kernel_layout(module, name: str, dtype) -> str:
    """What of a layer the kernels of backend `name` run: the projection, and both directions
    of a bidirectional layer in one launch or one launch per direction (and why)."""
    text = ""
    proj = getattr(module, "proj_size", 0)
    if proj:
        text += f" proj_size={proj} runs inside the {name} kernels (h = W_hr (o * tanh c) each step)."
    if getattr(module, "bidirectional", False):
        why = backends.why_not_two_directions(name, module.cell, dtype, module.hidden_size, proj)
        text += (f" Each layer: one input GEMM for both directions, then both directions in one {name} launch."
                 if why is None else
                 f" Each layer: one input GEMM for both directions, then one {name} launch per direction ({why}).")
    return text
