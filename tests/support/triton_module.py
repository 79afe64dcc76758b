"""Two-layer Triton modules against torch.nn, for the module and mask tests."""
import torch

from support.parity import compare_to_torch, make_inputs, make_pair, make_state
from support.triton_recurrence import DEVICE


def check_module(cell, packed, bidir, layers=2, seed=0):
    torch.manual_seed(seed)  # the weights: the same draw whatever ran before in this process
    ours, ref = make_pair(cell, 6, 9, backend="triton", dtype=torch.float32,
                          num_layers=layers, bidirectional=bidir)
    ours, ref = ours.to(DEVICE), ref.to(DEVICE)
    x = make_inputs(6, 5, 8, torch.float32, packed=packed, seed=seed)
    x = x.to(DEVICE)  # a PackedSequence moves its data and indices; make the data a leaf again
    x = x.detach().requires_grad_() if packed is None else x._replace(data=x.data.detach().requires_grad_())
    for hx in (make_state(cell, ours, 5, torch.float32), None):
        if hx is not None:
            hx = tuple(h.detach().to(DEVICE).requires_grad_() for h in hx) if isinstance(hx, tuple) \
                else hx.detach().to(DEVICE).requires_grad_()
        err_ours, err_torch = compare_to_torch(ours, ref, x, hx, seed)
        # float32 both: no more than twice torch.nn's own distance to float64, plus an ulp
        assert err_ours <= 2 * err_torch + torch.finfo(torch.float32).eps, (err_ours, err_torch)
