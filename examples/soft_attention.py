"""Soft attention over a conv feature grid (the "show, attend and tell" kind), and a picture of it.

examples/captioning.py --attention uses it: at every decoding step the decoder's last hidden
state scores each cell of the image's feature grid, a softmax over the grid turns the scores into
weights, and the weighted mean of the cells' features (the context) enters the LSTM cell's input.
"""
from __future__ import annotations

import torch
from torch import nn


def annotations(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, gh, gw) feature maps -> (N, gh*gw, C + 2): each grid cell's features and its (x, y)
    in [-1, 1]. Convolutions are (nearly) blind to where they are; the coordinates let a context
    say where the attended cell lies, which a caption like "... left of ..." needs."""
    N, _, gh, gw = maps.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, gh, device=maps.device, dtype=maps.dtype),
                            torch.linspace(-1, 1, gw, device=maps.device, dtype=maps.dtype), indexing="ij")
    coords = torch.stack([xs, ys]).expand(N, 2, gh, gw)
    return torch.cat([maps, coords], 1).flatten(2).transpose(1, 2)


class SoftAttention(nn.Module):
    """Additive attention: e_i = w · tanh(W_v v_i + W_h h), alpha = softmax_i(e), context = sum_i alpha_i v_i."""

    def __init__(self, features: int, hidden: int, size: int):
        super().__init__()
        self.key = nn.Linear(features, size)
        self.query = nn.Linear(hidden, size, bias=False)
        self.score = nn.Linear(size, 1, bias=False)

    def keys(self, values: torch.Tensor) -> torch.Tensor:
        """W_v v_i for every cell, (N, P, size): computed once per image, not once per step."""
        return self.key(values)

    def forward(self, keys, values, h):
        """(context (N, features), weights (N, P)) for the query h (N, hidden)."""
        scores = self.score(torch.tanh(keys + self.query(h).unsqueeze(1))).squeeze(-1)
        weights = scores.softmax(-1)
        return torch.bmm(weights.unsqueeze(1), values).squeeze(1), weights


def save_attention_maps(path, images, words: list, weights, grid: tuple) -> bool:
    """One row per image: the image, then the attention weights of each word's step drawn over it.
    images (n, 3, S, S) in [0, 1]-ish; words: per image, the generated words (without <eos>);
    weights (n, L, P). Returns False (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    n, cols = len(images), 1 + max(len(w) for w in words)
    S = images.shape[-1]
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.7 * n), squeeze=False)
    for i in range(n):
        picture = images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
        for j in range(cols):
            ax = axes[i, j]
            ax.axis("off")
            if j == 0:
                ax.imshow(picture)
                ax.set_title("image", fontsize=8)
            elif j <= len(words[i]):
                heat = weights[i, j - 1].view(1, 1, *grid).float()
                heat = nn.functional.interpolate(heat, size=(S, S), mode="bilinear", align_corners=False)[0, 0]
                ax.imshow(picture)
                ax.imshow(heat.cpu().numpy(), cmap="magma", alpha=0.6, vmin=0)
                ax.set_title(words[i][j - 1], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
