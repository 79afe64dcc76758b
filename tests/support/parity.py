"""Helpers to run a fusedrnn module and its torch.nn twin side by side and compare
outputs, final states and every gradient against a float64 truth."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fusedrnn

TWINS = {"lstm": (fusedrnn.LSTM, nn.LSTM), "gru": (fusedrnn.GRU, nn.GRU),
         "rnn_tanh": (fusedrnn.RNN, nn.RNN), "rnn_relu": (fusedrnn.RNN, nn.RNN)}


CELL_TWINS = {"lstm": (fusedrnn.LSTMCell, nn.LSTMCell), "gru": (fusedrnn.GRUCell, nn.GRUCell),
              "rnn_tanh": (fusedrnn.RNNCell, nn.RNNCell), "rnn_relu": (fusedrnn.RNNCell, nn.RNNCell)}


def make_pair(cell, input_size, hidden_size, backend="reference", dtype=torch.float64, cells=False, **kw):
    """A fusedrnn module and a torch.nn module with identical parameters (cells=True: the cells)."""
    ours_cls, torch_cls = (CELL_TWINS if cells else TWINS)[cell]
    if cell.startswith("rnn"):
        kw["nonlinearity"] = cell.split("_")[1]
    ours = ours_cls(input_size, hidden_size, backend=backend, dtype=dtype, **kw)
    ref = torch_cls(input_size, hidden_size, dtype=dtype, **kw)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def flat_outputs(out):
    """(output, hidden) -> list of tensors (PackedSequence data, h_n, c_n); a cell's h or (h, c)
    -> [h] or [h, c]."""
    if isinstance(out, torch.Tensor):
        return [out]
    y, hidden = out
    ys = [y.data if isinstance(y, PackedSequence) else y]
    return ys + (list(hidden) if isinstance(hidden, tuple) else [hidden])


def run_with_grads(module, inputs, hx, seed=0):
    """Forward (seeded, for dropout), a fixed random cotangent, backward.

    Returns (outputs, grads) where grads covers the input data, every state tensor
    given and every parameter, in a fixed order.
    """
    torch.manual_seed(seed)
    out = module(inputs, hx)
    outs = flat_outputs(out)
    gen = torch.Generator().manual_seed(1234)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)).sum() for o in outs)
    leaves = [inputs.data if isinstance(inputs, PackedSequence) else inputs]
    if hx is not None:
        leaves += list(hx) if isinstance(hx, tuple) else [hx]
    leaves += list(module.parameters())
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [o.detach() for o in outs], [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, leaves)]


def make_inputs(I, B, T, dtype, batch_first=False, packed=None, unbatched=False, seed=0):
    """A leaf input (padded tensor or PackedSequence). packed in {None, 'sorted', 'unsorted'}."""
    g = torch.Generator().manual_seed(seed)
    if unbatched:
        return torch.randn(T, I, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64).to(dtype)
    if packed is None:
        x = x.transpose(0, 1).contiguous() if batch_first else x
        return x.requires_grad_()
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    if packed == "sorted":
        lengths = lengths.sort(descending=True).values
    p = pack_padded_sequence(x, lengths, enforce_sorted=(packed == "sorted"))
    data = p.data.detach().requires_grad_()
    return PackedSequence(data, p.batch_sizes, p.sorted_indices, p.unsorted_indices)


def make_state(cell, module, B, dtype, unbatched=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    D = 2 if module.bidirectional else 1
    P = module.proj_size if getattr(module, "proj_size", 0) else module.hidden_size
    lead = (module.num_layers * D,) if unbatched else (module.num_layers * D, B)
    h = torch.randn(*lead, P, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    if cell != "lstm":
        return h
    c = torch.randn(*lead, module.hidden_size, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    return h, c


def to_dtype(obj, dtype):
    """A detached leaf copy of an input/state structure in another dtype."""
    if obj is None:
        return None
    if isinstance(obj, tuple) and not isinstance(obj, PackedSequence):
        return tuple(to_dtype(o, dtype) for o in obj)
    if isinstance(obj, PackedSequence):
        return PackedSequence(obj.data.detach().to(dtype).requires_grad_(), obj.batch_sizes,
                              obj.sorted_indices, obj.unsorted_indices)
    return obj.detach().to(dtype).requires_grad_()


def max_err(a_list, b_list):
    return max(((a.double() - b.double()).abs().max().item() if a.numel() else 0.0)
                for a, b in zip(a_list, b_list))


def compare_to_torch(ours, ref, inputs, hx, seed=0):
    """Max abs error of fusedrnn and of torch.nn against torch.nn run in float64.

    Returns (err_ours, err_torch): for float64 modules err_torch is 0 and err_ours is
    the distance to torch.nn itself.
    """
    dtype = next(ours.parameters()).dtype
    truth_mod = copy.deepcopy(ref).double()
    o_t, g_t = run_with_grads(truth_mod, to_dtype(inputs, torch.float64), to_dtype(hx, torch.float64), seed)
    o_o, g_o = run_with_grads(ours, inputs, hx, seed)
    o_r, g_r = run_with_grads(ref, to_dtype(inputs, dtype), to_dtype(hx, dtype), seed)
    assert [o.shape for o in o_o] == [o.shape for o in o_t]
    assert [g.shape for g in g_o] == [g.shape for g in g_t]
    return max_err(o_o + g_o, o_t + g_t), max_err(o_r + g_r, o_t + g_t)
