"""The kernel contract as the reference implements it: lengths, reverse, argument checks."""
import pytest
import torch

from fusedrnn import ops

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


def args(cell, T=6, B=3, H=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    G = ops.GATES[cell]
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    c0 = r(B, H) if cell == "lstm" else None
    return r(T, B, G * H), r(B, H), c0, r(G * H, H) * 0.5, r(G * H)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_equal_running_each_sequence_alone(cell, reverse):
    gx, h0, c0, w, b = args(cell)
    lengths = torch.tensor([6, 2, 4])
    out = ops.recurrence(cell, gx, h0, c0, w, b, lengths=lengths, reverse=reverse)
    for i, L in enumerate(lengths.tolist()):
        alone = ops.recurrence(cell, gx[:L, i:i + 1], h0[i:i + 1], c0[i:i + 1] if c0 is not None else None,
                               w, b, reverse=reverse)
        torch.testing.assert_close(out[0][:L, i:i + 1], alone[0], rtol=0, atol=1e-14)
        assert torch.all(out[0][L:, i] == 0)
        for final, final_alone in zip(out[1:], alone[1:]):
            torch.testing.assert_close(final[i:i + 1], final_alone, rtol=0, atol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_reverse_is_forward_on_flipped_time(cell):
    gx, h0, c0, w, b = args(cell)
    fwd = ops.recurrence(cell, gx.flip(0), h0, c0, w, b)
    rev = ops.recurrence(cell, gx, h0, c0, w, b, reverse=True)
    torch.testing.assert_close(rev[0], fwd[0].flip(0), rtol=0, atol=1e-14)
    torch.testing.assert_close(rev[1], fwd[1], rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_outputs_in_input_dtype(dtype):
    gx, h0, c0, w, b = args("lstm", dtype=dtype)
    y, hT, cT = ops.recurrence("lstm", gx, h0, c0, w, b)
    assert y.dtype == hT.dtype == cT.dtype == dtype


def test_gradients_flow_to_every_argument():
    gx, h0, c0, w, b = [t.requires_grad_() for t in args("lstm")]
    y, hT, cT = ops.recurrence("lstm", gx, h0, c0, w, b, lengths=torch.tensor([6, 1, 3]), reverse=True)
    (y.sum() + hT.sum() + cT.sum()).backward()
    for t in (gx, h0, c0, w, b):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_no_bias():
    gx, h0, _, w, _ = args("gru")
    y, hT = ops.recurrence("gru", gx, h0, None, w, None)
    assert y.shape == (6, 3, 5) and torch.equal(y[-1], hT)


@pytest.mark.parametrize("bad,match,exc", [
    (dict(cell="lstmx"), "unknown cell", ValueError),
    (dict(gx_shape=(6, 3, 19)), "is not", ValueError),
    (dict(h0_shape=(2, 5)), "h0 must have shape", ValueError),
    (dict(c0=None), "c0 must have shape", ValueError),
    (dict(w_dtype=torch.float32), "w_hh has dtype", TypeError),
    (dict(lengths=torch.tensor([6, 0, 2])), r"lengths must lie in \[1, T=6\]", ValueError),
    (dict(lengths=torch.tensor([7, 1, 2])), r"lengths must lie in \[1, T=6\]", ValueError),
    (dict(lengths=torch.tensor([6.0, 1, 2])), "int32 or int64", TypeError),
    (dict(lengths=torch.tensor([6, 1])), r"shape \(3,\)", ValueError),
    (dict(backend="torch"), "runs whole torch.nn modules", ValueError),
    (dict(backend="warp"), "unknown backend", ValueError),
])
def test_bad_arguments(bad, match, exc):
    cell = bad.get("cell", "lstm")
    gx, h0, c0, w, b = args("lstm")
    if "gx_shape" in bad:
        gx = torch.zeros(bad["gx_shape"], dtype=gx.dtype)
    if "h0_shape" in bad:
        h0 = torch.zeros(bad["h0_shape"], dtype=h0.dtype)
    if "c0" in bad:
        c0 = bad["c0"]
    if "w_dtype" in bad:
        w = w.to(bad["w_dtype"])
    with pytest.raises(exc, match=match):
        ops.recurrence(cell, gx, h0, c0, w, b, lengths=bad.get("lengths"), backend=bad.get("backend", "reference"))


def args_two_directions(cell="lstm", T=4, B=3, H=5, P=None):
    g = torch.Generator().manual_seed(3)
    G, P = ops.GATES[cell], P or H
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return dict(gx=r(T, B, 2 * G * H), h0=r(2, B, P), c0=r(2, B, H) if cell == "lstm" else None,
                w_hh=r(2, G * H, P), b_hh=r(2, G * H), w_hr=r(2, P, H) if P != H else None)


@pytest.mark.parametrize("cell", CELLS)
def test_two_directions_are_a_forward_and_a_reverse_call(cell):
    a = args_two_directions(cell, P=3 if cell == "lstm" else None)
    lengths = torch.tensor([4, 1, 3])
    both = ops.recurrence(cell, a["gx"], a["h0"], a["c0"], a["w_hh"], a["b_hh"], lengths=lengths, w_hr=a["w_hr"])
    GH = a["w_hh"].shape[1]
    for d in (0, 1):
        one = ops.recurrence(cell, a["gx"][..., d * GH:(d + 1) * GH], a["h0"][d],
                             a["c0"][d] if a["c0"] is not None else None, a["w_hh"][d], a["b_hh"][d],
                             lengths=lengths, reverse=d == 1, w_hr=a["w_hr"][d] if a["w_hr"] is not None else None)
        P = one[0].shape[2]
        assert torch.equal(both[0][..., d * P:(d + 1) * P], one[0])
        for stacked, single in zip(both[1:], one[1:]):
            assert torch.equal(stacked[d], single)


@pytest.mark.parametrize("bad,match", [
    (dict(reverse=True), "reverse must be False with two directions"),
    (dict(h0=torch.zeros(3, 3, 3)), r"h0 must have shape \(B, P\) for one direction or \(2, B, P\) for two"),
    (dict(gx=torch.zeros(4, 3, 20)), r"is not \(T>=1, B>=1, 2\*4\*H\)"),
    (dict(w_hh=torch.zeros(20, 3)), r"w_hh must have shape \(2, 20, 3\)"),
    (dict(b_hh=torch.zeros(20)), r"b_hh must have shape \(2, 20\)"),
    (dict(c0=torch.zeros(3, 5)), r"c0 must have shape \(2, 3, 5\)"),
    (dict(w_hr=torch.zeros(3, 5)), r"w_hr must be a 3-D tensor \(2, P, H=5\)"),
    (dict(w_hr=torch.zeros(2, 4, 5)), r"h0 must have shape \(2, 3, 4\)"),
])
def test_bad_two_direction_arguments(bad, match):
    a = args_two_directions("lstm", P=3)
    reverse = bad.pop("reverse", False)
    a.update({k: v.double() for k, v in bad.items()})
    with pytest.raises(ValueError, match=match):
        ops.recurrence("lstm", a["gx"], a["h0"], a["c0"], a["w_hh"], a["b_hh"], reverse=reverse, w_hr=a["w_hr"])
