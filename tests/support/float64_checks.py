"""The comparisons the float64 oracle tests share: gradients of a fixed random weighting of
the outputs, and a max-error check relative to the truth's scale."""
import torch


def grads(outputs, inputs, seed=7):
    """Gradients of a fixed random weighting of `outputs` (None entries skipped) with respect to `inputs`."""
    g = torch.Generator().manual_seed(seed)
    outputs = [o for o in outputs if o is not None]
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(loss, inputs)


def assert_close(got, want, what, rtol=1e-10):
    got, want = got.double(), want.double()
    bound = rtol * (1.0 + want.abs().max().item())
    err = (got - want).abs().max().item()
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"
