"""Measure what autograd keeps for backward: the activation memory of a forward pass.

    from fusedrnn.diagnostics import saved_bytes, saved_bytes_per_token
    report = saved_bytes(lambda: model(x))       # any callable; counts what autograd saves
    per_token = saved_bytes_per_token(rnn, x)     # bytes per (time step, sequence) per layer-direction

Works on any device (benchmarks call it on the GPU). Each storage is counted once,
however many saved tensors view it; tensors that already existed before the call
(parameters, the inputs) are reported apart from the activations the call created.
`kernel_saved_bytes` predicts the fused path's footprint from a backend's
`saved_shapes` without running anything.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import PackedSequence


@dataclass
class SavedBytes:
    activations: int   # bytes of distinct storages the call created and autograd saved
    preexisting: int   # bytes of distinct saved storages that existed before (weights, inputs)
    saved_tensors: int  # how many tensors autograd saved (views of one storage count each)

    @property
    def total(self) -> int:
        return self.activations + self.preexisting


def _storage_key(t: torch.Tensor):
    s = t.untyped_storage()
    return (t.device, s.data_ptr()), s.nbytes()


def saved_bytes(fn, preexisting=()) -> SavedBytes:
    """Run `fn()` and measure the tensors autograd saves for backward.

    `preexisting`: tensors (or modules, whose parameters and buffers count) that exist
    independently of the call; storages they own are reported as `preexisting`. The
    output of `fn` is dropped, freeing the graph, before returning.
    """
    before = set()
    for obj in preexisting:
        tensors = list(obj.parameters()) + list(obj.buffers()) if isinstance(obj, torch.nn.Module) else [obj]
        for t in tensors:
            if isinstance(t, PackedSequence):
                t = t.data
            if isinstance(t, torch.Tensor):
                before.add(_storage_key(t)[0])
    seen: dict = {}
    count = 0

    def pack(t):
        nonlocal count
        count += 1
        key, nbytes = _storage_key(t)
        seen[key] = nbytes
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    act = sum(n for k, n in seen.items() if k not in before)
    pre = sum(n for k, n in seen.items() if k in before)
    return SavedBytes(act, pre, count)


def saved_bytes_per_token(rnn: torch.nn.Module, x: torch.Tensor, hx=None) -> float:
    """Activation bytes autograd saves per token and per layer-direction for `rnn(x, hx)`.

    `x` is a padded (T, B, I) tensor (batch_first respected) or a PackedSequence; a token is
    one (time step, sequence) pair. Parameters and `x` itself are not counted.
    """
    if isinstance(x, PackedSequence):
        tokens = x.data.shape[0]
    else:
        tokens = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    layers = rnn.num_layers * (2 if rnn.bidirectional else 1)
    pre = [rnn, x] + ([] if hx is None else list(hx) if isinstance(hx, tuple) else [hx])
    with torch.enable_grad():
        rep = saved_bytes(lambda: rnn(x, hx), preexisting=pre)
    return rep.activations / (tokens * layers)


def kernel_saved_bytes(kernels, cell: str, T: int, B: int, H: int, dtype=torch.float32,
                       bias: bool = True, lengths: bool = False) -> int:
    """Bytes the fused path saves for one layer-direction, predicted without running a kernel.

    What fusedrnn.ops.library saves: gx (T,B,G*H), h0, c0 (lstm), w_hh, b_hh, lengths
    (int32), a private copy of y (T,B,H) and the backend's own `saved` tensors (from its `saved_shapes`,
    evaluated on meta tensors). `kernels` is a backend module or its import name.
    The input projection's GEMM saves its input and W_ih on top (torch's linear).
    """
    from .ops import GATES, library  # noqa: PLC0415

    mod = library.kernels_module(kernels) if isinstance(kernels, str) else kernels
    G = GATES[cell]
    meta = dict(device="meta", dtype=dtype)
    gx, h0 = torch.empty(T, B, G * H, **meta), torch.empty(B, H, **meta)
    c0 = torch.empty(B, H, **meta) if cell == "lstm" else None
    w_hh = torch.empty(G * H, H, **meta)
    b_hh = torch.empty(G * H, **meta) if bias else None
    lens = torch.empty(B, device="meta", dtype=torch.int32) if lengths else None
    shapes = library.saved_shapes(mod, cell, gx, h0, c0, w_hh, b_hh, lens, False, True)
    elt = dtype.itemsize if hasattr(dtype, "itemsize") else torch.empty(0, dtype=dtype).element_size()
    total = (T * B * G * H + T * B * H + B * H * (2 if c0 is not None else 1) + G * H * H
             + (G * H if bias else 0)) * elt + (4 * B if lengths else 0)
    for shape, dt in shapes:
        n = 1
        for s in shape:
            n *= int(s)
        total += n * torch.empty(0, dtype=dt).element_size()
    return total
