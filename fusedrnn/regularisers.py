"""Zoneout and variational recurrent dropout: the options, their checks and their masks.

The modules and cells take three probabilities (keyword-only, default 0: no change at all):

    zoneout             p_h: each unit of h keeps its previous value with probability p_h
    zoneout_cell        p_c: the same for the LSTM's cell state c
    recurrent_dropout   p_d: one mask per sequence on h_{t-1} where it enters W_hh h

They add no parameters. The masks are drawn here, in Python, once per call and layer, and
reach every backend as tensors (the kernel contract's `zoneout_h`, `zoneout_c`, `drop_h`),
so every backend computes the same function of the same masks. Training draws them from
torch's generator of the input's device, in this order per layer (layer 0 first, before
that layer's recurrence, after the previous layer's inter-layer dropout):

    1. drop_h     torch.rand(D, B, P) >= p_d, scaled by 1/(1 - p_d)   (only when p_d > 0)
    2. zoneout_h  torch.rand(T, B, D, P) < p_h                         (only when p_h > 0)
    3. zoneout_c  torch.rand(T, B, D, H) < p_c                         (LSTM, only when p_c > 0)

In eval no number is drawn: the zoneout masks hold p itself (the expectation,
h_t = p h_{t-1} + (1 - p) h̃_t) and recurrent dropout is off (it scaled in training).
Masks are float32 (float64 for float64 inputs). Dimensions: T steps, B batch, D directions,
H hidden units, P = proj_size or H.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

#: the options' names, in the order of Regularisers' fields
OPTIONS = ("zoneout", "zoneout_cell", "recurrent_dropout")
_WHAT = {"zoneout": "of a unit of h keeping its previous value",
         "zoneout_cell": "of a unit of the LSTM's cell state keeping its previous value",
         "recurrent_dropout": "of an element of h_{t-1} being zeroed where it enters the recurrent product"}


class Regularisers(NamedTuple):
    zoneout: float = 0.0
    zoneout_cell: float = 0.0
    recurrent_dropout: float = 0.0

    def active(self, training: bool) -> bool:
        """Whether a call computes anything but the plain cell: zoneout always (its eval form is the
        expectation), recurrent dropout only in training."""
        return bool(self.zoneout or self.zoneout_cell or (training and self.recurrent_dropout))


NONE = Regularisers()


class LayerMasks(NamedTuple):
    """One layer's masks in the kernel contract's layout (docs/design.md), None where off."""
    zoneout_h: torch.Tensor | None   # (T, B, D*P): 1 (train) or p (eval) keeps h_{t-1}
    zoneout_c: torch.Tensor | None   # (T, B, D*H): the same for c (LSTM)
    drop_h: torch.Tensor | None      # (B, P) for D = 1, (2, B, P) for D = 2: multiplies h_{t-1} in W_hh h

    def kwargs(self) -> dict:
        """The keywords a backend call gets: only the masks that are given."""
        return {k: v for k, v in self._asdict().items() if v is not None}


NO_MASKS = LayerMasks(None, None, None)


def check_p(name: str, p) -> float:
    """p as a float; torch.nn's ValueError (the way it checks `dropout`) when not a number in [0, 1]."""
    if not isinstance(p, numbers.Number) or isinstance(p, bool) or not 0 <= p <= 1:
        raise ValueError(f"{name} should be a number in range [0, 1] representing the probability {_WHAT[name]}")
    return float(p)


def checked(owner: str, has_c: bool, zoneout, zoneout_cell, recurrent_dropout) -> Regularisers:
    """The options of module `owner` (for messages), checked; zoneout_cell only where there is a c."""
    regs = Regularisers(*(check_p(n, p) for n, p in zip(OPTIONS, (zoneout, zoneout_cell, recurrent_dropout))))
    if regs.zoneout_cell and not has_c:
        raise ValueError(f"fusedrnn.{owner}: zoneout_cell applies to the LSTM's cell state only; "
                         "this module has none (use zoneout for h)")
    return regs


def mask_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def layer_masks(regs: Regularisers, training: bool, T: int, B: int, D: int, P: int, H: int, lstm: bool,
                device, dtype) -> LayerMasks:
    """Draw (training) or build (eval) one layer's masks, in the order of the module docstring."""
    md = mask_dtype(dtype)
    drop_h = zh = zc = None
    if training and regs.recurrent_dropout:
        keep = torch.rand(D, B, P, device=device) >= regs.recurrent_dropout
        scale = 0.0 if regs.recurrent_dropout == 1 else 1.0 / (1.0 - regs.recurrent_dropout)
        drop_h = keep.to(md) * scale
        drop_h = drop_h[0] if D == 1 else drop_h

    def zoneout(p, width):
        if not p:
            return None
        if not training:
            return torch.full((T, B, D * width), p, dtype=md, device=device)
        return (torch.rand(T, B, D, width, device=device) < p).to(md).reshape(T, B, D * width)

    zh = zoneout(regs.zoneout, P)
    zc = zoneout(regs.zoneout_cell, H) if lstm else None
    return LayerMasks(zh, zc, drop_h)


def direction(masks: dict, d: int, D: int) -> dict:
    """Direction d's part of a layer's mask keywords (D = 2): the zoneout masks' d-th block of the
    last dimension, drop_h[d]."""
    out = {}
    for k, v in masks.items():
        if v is None:
            continue
        if k == "drop_h":
            out[k] = v[d]
        else:
            w = v.shape[-1] // D
            out[k] = v[..., d * w:(d + 1) * w]
    return out
