"""The decode step's shared argument check (fusedrnn/ops/step_args.py): both kernel backends'
`step` raise these errors, with these messages, before anything is allocated."""
import pytest
import torch

from fusedrnn.ops import step_args

B, I, H, G = 2, 5, 3, 4


def _args():
    x, h0, c0 = torch.zeros(B, I), torch.zeros(B, H), torch.zeros(B, H)
    w_ih, w_hh, b = torch.zeros(G * H, I), torch.zeros(G * H, H), torch.zeros(G * H)
    return x, h0, c0, w_ih, w_hh, b


def test_a_consistent_step_gives_its_sizes():
    x, h0, c0, w_ih, w_hh, b = _args()
    assert step_args.check("lstm", x, h0, c0, w_ih, w_hh, b, b) == (B, I, H)
    assert step_args.check("gru", x, h0, None, w_ih[:9], w_hh[:9], None, None) == (B, I, H)


def test_step_errors_name_the_bad_argument():
    x, h0, c0, w_ih, w_hh, b = _args()
    with pytest.raises(ValueError, match=r"step: w_hh must have shape \(12, 3\), got \(12, 4\)"):
        step_args.check("lstm", x, h0, c0, w_ih, torch.zeros(G * H, 4), b, b)
    with pytest.raises(ValueError, match=r"step: c0 must have shape \(2, 3\), got None"):
        step_args.check("lstm", x, h0, None, w_ih, w_hh, b, b)
    with pytest.raises(ValueError, match="c0 must be None for cell 'gru'"):
        step_args.check("gru", x, h0, c0, w_ih[:9], w_hh[:9], None, None)
    with pytest.raises(ValueError, match=r"step: b_ih must have shape \(12,\)"):
        step_args.check("lstm", x, h0, c0, w_ih, w_hh, torch.zeros(11), b)
    with pytest.raises(TypeError, match="step: w_ih has dtype torch.float16 but x has torch.float32"):
        step_args.check("lstm", x, h0, c0, w_ih.half(), w_hh, b, b)
