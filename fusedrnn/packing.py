"""PackedSequence <-> padded time-major tensors, in the packed (sorted) batch order.

A packed sequence stores step t of the batch_sizes[t] longest sequences one after
another, so `padded[valid] = data` with valid[t, b] = b < batch_sizes[t] is exactly
its layout; both directions are single differentiable masked copies.
"""
from __future__ import annotations

import torch


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
