"""Arguments for fusedrnn.ops.recurrence and its check against the float64 reference, for the Triton
kernel tests."""
import torch

from fusedrnn import ops
from fusedrnn.ops.common import GATES

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_args(cell, T, B, H, dtype, lengths, bias, seed=0, device=DEVICE):
    """Leaf tensors (gx, h0, c0, w_hh, b_hh) in `dtype`, and lengths or None."""
    G = GATES[cell]
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype).requires_grad_()

    args = [leaf(T, B, G * H), leaf(B, H), leaf(B, H) if cell == "lstm" else None,
            leaf(G * H, H, scale=H ** -0.5), leaf(G * H) if bias else None]
    lens = None
    if lengths:
        lens = torch.randint(1, T + 1, (B,), generator=g)
        lens[0] = T  # the longest sequence fills the batch, as in a PackedSequence
    return args, lens


def run(cell, args, lens, reverse, backend, dtype=None, seed=1):
    """Outputs and gradients of a fixed random loss, every tensor as float64.

    `dtype` recasts the leaves first (the reference run in another dtype)."""
    if dtype is not None:
        args = [a.detach().to(dtype).requires_grad_() if a is not None else None for a in args]
    outs = ops.recurrence(cell, *args, lengths=lens, reverse=reverse, backend=backend)
    g = torch.Generator().manual_seed(seed)
    cots = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device, o.dtype) for o in outs]
    loss = sum((o * c).sum() for o, c in zip(outs, cots))
    leaves = [a for a in args if a is not None]
    grads = torch.autograd.grad(loss, leaves)
    names = ["y", "hT"] + (["cT"] if cell == "lstm" else []) + \
        [n for n, a in zip(("d_gx", "d_h0", "d_c0", "d_w_hh", "d_b_hh"), args) if a is not None]
    return dict(zip(names, [t.detach().double() for t in list(outs) + list(grads)]))


def errors(got: dict, truth: dict) -> dict:
    return {k: (got[k] - truth[k]).abs().max().item() for k in truth}


def check_against_reference(cell, T, B, H, lengths, reverse, dtype, bias, seed=0):
    """Assert the triton backend matches the float64 reference within the dtype's rule."""
    args, lens = make_args(cell, T, B, H, dtype, lengths, bias, seed)
    ours = run(cell, args, lens, reverse, "triton")
    truth = run(cell, args, lens, reverse, "reference", dtype=torch.float64)
    err = errors(ours, truth)
    if dtype == torch.float32:
        bound = {k: 3e-5 * (1.0 + truth[k].abs().max().item()) for k in truth}
    else:
        # no worse than twice the error the reference itself makes run in this dtype
        ref_err = errors(run(cell, args, lens, reverse, "reference", dtype=dtype), truth)
        bound = {k: 2.0 * ref_err[k] + 1e-6 * (1.0 + truth[k].abs().max().item()) for k in truth}
    bad = {k: (err[k], bound[k]) for k in truth if not err[k] <= bound[k]}
    assert not bad, f"error above bound (err, bound): {bad}"
    return err
