"""Padded steps (t >= lengths[b]) contribute exactly nothing, forward and backward.

The oracle is each sequence run alone over its own length in float64 (no padding at all):
the batch's outputs and its gx, h0, c0 gradients must be those of the sequence alone, its
weight gradients their sum over the batch, with the same NaN/inf positions. A NaN or inf
in a padded step of gx, or in the state a short sequence carries past its end (from a
non-finite h0/c0), must not reach any gradient: no 0 * NaN through a mask, and the weight
gradient GEMM must not pair a sequence's last state with its first padded step.
"""
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from support import backend_params
from fusedrnn.ops import GATES
from support.parity import make_pair, run_with_grads
from support.sequence_oracle import assert_same_values, each_sequence_alone, run_recurrence

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
T, B, H = 4, 3, 4
LENGTHS = torch.tensor([4, 2, 1])
NONFINITE = [float("nan"), float("inf"), -float("inf")]
CELL_STATES = [(c, "h0") for c in CELLS] + [("lstm", "c0")]


@pytest.fixture(params=backend_params.ALL)
def backend(request, monkeypatch):
    return backend_params.resolve(request.param, monkeypatch)


def make_args(cell, seed=0):
    g = torch.Generator().manual_seed(seed)
    G = GATES[cell]
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) * 0.5  # noqa: E731
    return dict(gx=r(T, B, G * H), h0=r(B, H), c0=r(B, H) if cell == "lstm" else None, w_hh=r(G * H, H),
                b_hh=r(G * H))


def compare_to_each_sequence_alone(cell, args, reverse, backend):
    want_out, want_grads = each_sequence_alone(cell, args, LENGTHS, reverse)
    dtype = torch.float64 if backend == "reference" else torch.float32
    got_out, got_grads = run_recurrence(cell, args, LENGTHS, reverse, backend, dtype)
    pairs = [(f"output {i}", a, b) for i, (a, b) in enumerate(zip(got_out, want_out))]
    pairs += [(f"d{k}", got_grads[k], want_grads[k]) for k in want_grads]
    assert_same_values(pairs, atol=1e-10 if dtype == torch.float64 else 1e-4)
    return got_grads


@pytest.mark.sampled
@pytest.mark.parametrize("value", NONFINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_nonfinite_gx_at_padded_steps_reaches_nothing(cell, reverse, value, backend):
    args = make_args(cell)
    for b, L in enumerate(LENGTHS.tolist()):
        args["gx"][L:, b] = value  # every padded step of every gate
    grads = compare_to_each_sequence_alone(cell, args, reverse, backend)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert (grads["gx"][1:, 2] == 0).all() and (grads["gx"][2:, 1] == 0).all()


@pytest.mark.sampled
@pytest.mark.parametrize("value", NONFINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell,state", CELL_STATES)
def test_nonfinite_state_of_a_short_sequence_stays_in_it(cell, state, reverse, value, backend):
    """A non-finite h0/c0 of the short sequences poisons what their real steps touch (as it
    would alone) and nothing more: the carried state never enters a padded step's gradient."""
    args = make_args(cell)
    args[state][1:, 0] = value  # sequences of length 2 and 1
    compare_to_each_sequence_alone(cell, args, reverse, backend)


@pytest.mark.sampled
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell,state", CELL_STATES)
def test_packed_module_with_nonfinite_state_matches_torch(cell, state, bidirectional, backend):
    """torch.nn runs a packed batch on the live rows only, so it is right here: fusedrnn gives
    its NaN/inf positions and values, gradients of every parameter included."""
    dtype = torch.float64 if backend == "reference" else torch.float32
    ours, ref = make_pair(cell, 3, H, backend=backend, dtype=dtype, bidirectional=bidirectional)
    g = torch.Generator().manual_seed(0)
    packed = pack_padded_sequence(torch.randn(T, B, 3, generator=g, dtype=dtype), LENGTHS)
    x = PackedSequence(packed.data.requires_grad_(), packed.batch_sizes)
    D = 2 if bidirectional else 1
    h, c = torch.randn(D, B, H, generator=g, dtype=dtype), torch.randn(D, B, H, generator=g, dtype=dtype)
    (h if state == "h0" else c)[:, 1:, 0] = float("inf")
    hx = (h.requires_grad_(), c.requires_grad_()) if cell == "lstm" else h.requires_grad_()
    o_ours, g_ours = run_with_grads(ours, x, hx)
    o_ref, g_ref = run_with_grads(ref, x, hx)
    names = [f"output {i}" for i in range(len(o_ours))] + ["dx", "dh0"] + (["dc0"] if cell == "lstm" else []) \
        + [f"d{n}" for n, _ in ours.named_parameters()]
    assert_same_values(list(zip(names, o_ours + g_ours, o_ref + g_ref)),
                       atol=1e-10 if dtype == torch.float64 else 1e-5)
