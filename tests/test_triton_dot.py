"""tiles.dot2, the 2-D product of the recurrence's tiles: taken as a batched product of one
(BATCH_ONE_DOT, under Triton >= 3.9, for 16-bit tiles with fewer than 16 columns) it gives
the plain product's values. The interpreter runs both forms (fp16: it cannot multiply bf16)."""
from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from fusedrnn.ops.triton import tiles


@triton.jit
def _dot_kernel(p_a, p_b, p_c, p_out, M: tl.constexpr, K: tl.constexpr, N: tl.constexpr):
    om, ok, on = tl.arange(0, M), tl.arange(0, K), tl.arange(0, N)
    a = tl.load(p_a + om[:, None] * K + ok[None, :])
    b = tl.load(p_b + ok[:, None] * N + on[None, :])
    acc = tl.load(p_c + om[:, None] * N + on[None, :])
    tl.store(p_out + om[:, None] * N + on[None, :], tiles.dot2(a, b, acc, "ieee"))


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("n", [8, 16])
def test_dot2_is_the_product_in_either_form(monkeypatch, batched, n):
    monkeypatch.setattr(tiles, "BATCH_ONE_DOT", tl.constexpr(batched))
    g = torch.Generator().manual_seed(n)
    # small integers: every product and sum exact in fp16 operands and the fp32 accumulator
    a = torch.randint(-4, 5, (32, 16), generator=g).to(torch.float16)
    b = torch.randint(-4, 5, (16, n), generator=g).to(torch.float16)
    c = torch.randint(-8, 9, (32, n), generator=g).float()
    out = torch.empty(32, n)
    _dot_kernel[(1,)](a, b, c, out, 32, 16, n)
    torch.testing.assert_close(out, a.double().matmul(b.double()).float() + c, rtol=0, atol=0)


def test_the_batched_form_is_chosen_from_triton_3_9():
    major_minor = tuple(int(p) for p in triton.__version__.split(".")[:2])
    assert bool(tiles.BATCH_ONE_DOT) == (major_minor >= (3, 9))
