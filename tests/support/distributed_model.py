"""The model, data and training loop the multi-process tests (DDP, FSDP2) share: a 2-layer
bidirectional fusedrnn.LSTM and a linear head in float64, trained with SGD on a rank's
share of each batch (a mean loss, so equal shares average to the whole batch's gradient)."""
import torch
from torch import nn

import fusedrnn
from support import plain_kernels  # registers itself with the custom ops

STEPS, BATCH = 4, 6


class Model(nn.Module):
    def __init__(self, backend):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = fusedrnn.LSTM(3, 5, num_layers=2, bidirectional=True, backend=backend, dtype=torch.float64)
        self.head = nn.Linear(10, 1, dtype=torch.float64)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def batch(step):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(4, BATCH, 3, generator=g, dtype=torch.float64), \
        torch.randn(4, BATCH, 1, generator=g, dtype=torch.float64)


def full(t):
    """The whole tensor (all-gathered from an FSDP DTensor's shards; a plain tensor as is)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def train(model, rank=0, world=1):
    """STEPS of SGD with momentum on this rank's share of each batch; returns the first step's
    gradients and the final parameters, whole."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    per = BATCH // world
    first_grads = None
    for step in range(STEPS):
        x, target = batch(step)
        sl = slice(rank * per, (rank + 1) * per)
        loss = (model(x[:, sl]) - target[:, sl]).square().mean()
        opt.zero_grad()
        loss.backward()
        if first_grads is None:
            first_grads = [full(p.grad).detach().clone() for p in model.parameters()]
        opt.step()
    return first_grads, [full(p).detach().clone() for p in model.parameters()]


def backend_name(name):
    """The backend to build for a test's name: "kernels" is the kernel-backend path through the
    plain-PyTorch stand-in (tests/support/plain_kernels.py) behind the "triton" name."""
    if name == "kernels":
        fusedrnn.backends.KERNEL_BACKENDS["triton"] = plain_kernels.__name__
        return "triton"
    return name
