"""Contract v2 (tests/support/contract_v2.py) on tests/support/plain_kernels.py, the plain-PyTorch stand-in
for the kernel backends: every case, float64 and float32; the check fails on a backend that
gets a projection gradient or the direction layout wrong, and on one that declines nothing
but cannot run two directions."""
import pytest
import torch

from support import contract_v2
from support import plain_kernels


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", contract_v2.cases(), ids=str)
def test_plain_kernels_meet_contract_v2(case, dtype):
    err, err_torch = contract_v2.check_case(plain_kernels, case, dtype)
    assert err_torch > 0 or dtype == torch.float64  # the baseline was computed, not skipped


def test_the_check_covers_every_cell_direction_and_projection():
    got = {(c.cell, c.D, c.reverse, c.proj, c.lengths is not None) for c in contract_v2.cases()}
    for cell in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        for D, rev in ((1, False), (1, True), (2, False)):
            assert {(cell, D, rev, False, False), (cell, D, rev, False, True)} <= got
    assert {("lstm", D, rev, True, ln) for D, rev in ((1, False), (1, True), (2, False)) for ln in (0, 1)} <= got


def test_declined_cases_are_returned_not_run(monkeypatch):
    monkeypatch.setitem(plain_kernels.DECLARED, "directions", 1)
    monkeypatch.setitem(plain_kernels.DECLARED, "projections", False)
    which = [contract_v2.Case("lstm", 2), contract_v2.Case("lstm", 1, proj=True), contract_v2.Case("gru", 1)]
    declined = contract_v2.check_backend(plain_kernels, torch.float64, which=which)
    assert [c for c, _ in declined] == which[:2]


def _break(monkeypatch, fn, wrap):
    real = getattr(plain_kernels, fn)
    monkeypatch.setattr(plain_kernels, fn, lambda *a, **k: wrap(real(*a, **k)))


@pytest.mark.parametrize("breakage", ["dw_hr", "directions swapped", "hT of the wrong direction", "dh0"])
def test_the_check_fails_a_wrong_backend(monkeypatch, breakage):
    case = contract_v2.Case("lstm", 2, proj=True, lengths=(4, 1, 3))
    if breakage == "dw_hr":
        _break(monkeypatch, "backward", lambda g: (*g[:4], g[4] * 1.001))
    elif breakage == "directions swapped":
        _break(monkeypatch, "forward", lambda o: (torch.cat(o[0].chunk(2, 2)[::-1], 2).contiguous(), *o[1:]))
    elif breakage == "hT of the wrong direction":
        _break(monkeypatch, "forward", lambda o: (o[0], o[1].flip(0).contiguous(), *o[2:]))
    else:
        _break(monkeypatch, "backward", lambda g: (g[0], g[1], g[2] * 0, *g[3:]))
    with pytest.raises(AssertionError):
        contract_v2.check_case(plain_kernels, case, torch.float64)
