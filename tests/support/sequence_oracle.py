"""The truth for variable-length batches: each sequence run alone over its own length.

With no padding at all there is nothing a padded step could leak: the batch's outputs and
its gx, h0, c0 gradients must be those of the sequence alone, its weight gradients their
sum over the batch, with the same NaN and ±inf positions.
"""
import torch

import fusedrnn


def run_recurrence(cell, args, lengths, reverse, backend, dtype, seed=1):
    """Outputs and the gradients of every argument for a fixed random cotangent."""
    leaves = {k: v.to(dtype).requires_grad_() for k, v in args.items() if v is not None}
    out = fusedrnn.ops.recurrence(cell, leaves["gx"], leaves["h0"], leaves.get("c0"), leaves["w_hh"],
                                  leaves["b_hh"], lengths=lengths, reverse=reverse, backend=backend)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device, dtype)).sum() for o in out)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return [o.detach().double() for o in out], dict(zip(leaves, (gr.double() for gr in grads)))


def each_sequence_alone(cell, args, lengths, reverse, seed=1, cotangents=None):
    """The truth: run sequence b alone over lengths[b] steps in float64 (the reference), with
    the batch run's cotangent rows (`cotangents`, else drawn from `seed` as `run_recurrence` draws them);
    weight gradients summed over the batch."""
    T, B, GH = args["gx"].shape
    H = args["h0"].shape[1]
    n_out = 3 if cell == "lstm" else 2
    shapes = [(T, B, H)] + [(B, H)] * (n_out - 1)
    g = torch.Generator().manual_seed(seed)
    cots = cotangents or [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    outs = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    grads = {k: torch.zeros_like(v) for k, v in args.items() if v is not None}
    for b, L in enumerate(lengths.tolist()):
        one = {k: (v[:L, b:b + 1] if k == "gx" else v[b:b + 1] if k in ("h0", "c0") else v).detach().clone()
               .requires_grad_() for k, v in args.items() if v is not None}
        out = fusedrnn.ops.recurrence(cell, one["gx"], one["h0"], one.get("c0"), one["w_hh"], one["b_hh"],
                                      reverse=reverse, backend="reference")
        loss = (out[0] * cots[0][:L, b:b + 1]).sum() + sum((o * c[b:b + 1]).sum() for o, c in zip(out[1:], cots[1:]))
        gr = dict(zip(one, torch.autograd.grad(loss, list(one.values()))))
        outs[0][:L, b:b + 1] = out[0].detach()
        for o, ob in zip(outs[1:], out[1:]):
            o[b:b + 1] = ob.detach()
        grads["gx"][:L, b:b + 1] = gr["gx"]
        for k in ("h0", "c0"):
            if k in grads:
                grads[k][b:b + 1] = gr[k]
        for k in ("w_hh", "b_hh"):
            grads[k] += gr[k]
    return outs, grads


def assert_same_values(pairs, atol):
    """Equal NaN and ±inf positions, finite values within atol, for each (name, got, want)."""
    for name, a, b in pairs:
        for kind in (torch.isnan, torch.isposinf, torch.isneginf):
            assert torch.equal(kind(a), kind(b)), (name, kind.__name__, int(kind(a).sum()), int(kind(b).sum()))
        fin = torch.isfinite(b)
        torch.testing.assert_close(a[fin], b[fin], rtol=1e-4, atol=atol, msg=lambda m: f"{name}: {m}")
