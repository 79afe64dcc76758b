"""PackedSequence <-> padded time-major tensors, in the packed (sorted) batch order.

A packed sequence stores step t of the batch_sizes[t] longest sequences one after
another, so `padded[valid] = data` with valid[t, b] = b < batch_sizes[t] is exactly
its layout; both directions are single differentiable masked copies.
"""
from __future__ import annotations

import torch

#: the names torch's C++ gives dtypes in "expected scalar type Long but found Int"
_SCALAR_NAMES = {torch.int32: "Int", torch.int16: "Short", torch.int8: "Char", torch.uint8: "Byte",
                 torch.bool: "Bool", torch.float32: "Float", torch.float64: "Double", torch.float16: "Half",
                 torch.bfloat16: "BFloat16", torch.complex64: "ComplexFloat", torch.complex128: "ComplexDouble"}


def check_batch_sizes(data: torch.Tensor, batch_sizes: torch.Tensor) -> None:
    """Refuse a malformed PackedSequence as torch.nn's packed kernels do (same exception
    type; torch's message where torch checks deliberately), before anything runs.

    torch reads `batch_sizes` as int64 and slices `data` step by step, so it rejects another
    dtype, a negative size and sizes summing past `data`'s rows; it does not check that the
    sizes never increase, and then fails on mismatched shapes (or returns rows it never
    computed): fusedrnn refuses that with a RuntimeError of its own. Rows of `data` past the
    sum are ignored, as torch ignores them.
    """
    if batch_sizes.dtype != torch.int64:
        found = _SCALAR_NAMES.get(batch_sizes.dtype, str(batch_sizes.dtype))
        raise RuntimeError(f"expected scalar type Long but found {found}")
    if batch_sizes.dim() != 1:
        raise RuntimeError(f"batch_sizes must be a 1-D tensor, got shape {tuple(batch_sizes.shape)}")
    bs = batch_sizes.cpu()
    starts = torch.cumsum(bs, 0) - bs
    bad = (bs < 0) | (starts + bs > data.shape[0])
    if bad.any():  # torch's messages, for the first step its slicing fails at
        t = int(bad.nonzero()[0])
        if bs[t] < 0:
            raise RuntimeError("narrow(): length must be non-negative.")
        raise RuntimeError(f"start ({int(starts[t])}) + length ({int(bs[t])}) exceeds dimension size "
                           f"({data.shape[0]}).")
    if (bs[1:] > bs[:-1]).any():
        raise RuntimeError(f"batch_sizes must be non-increasing (a PackedSequence stores its sequences "
                           f"longest first), got {bs.tolist()}")


def valid_mask(batch_sizes: torch.Tensor) -> torch.Tensor:
    """(T, B) bool on the CPU, True where step t exists for (sorted) sequence b."""
    return torch.arange(int(batch_sizes[0])).unsqueeze(0) < batch_sizes.unsqueeze(1)


def unpack(data: torch.Tensor, batch_sizes: torch.Tensor):
    """data (N, F) packed → (padded (T,B,F), lengths (B,) int64 on the CPU, valid (T,B) on data's device)."""
    valid_cpu = valid_mask(batch_sizes)
    lengths = valid_cpu.sum(0)
    valid = valid_cpu.to(data.device)
    T, B = valid.shape
    padded = data.new_zeros(T, B, data.shape[1]).masked_scatter(valid.unsqueeze(2), data)
    return padded, lengths, valid


def pack(padded: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """padded (T,B,F) → packed data (N, F) in the layout of `valid`."""
    return padded[valid]
