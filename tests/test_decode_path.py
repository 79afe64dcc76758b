"""The decode step's path on the CPU: no custom-op dispatch and no repeated contract checks
for a call autograd does not record, the benchmark's decode variants (a stack of cells, a
captured step: its bookkeeping with the graph replaced by eager calls), CapturedStep's
refusal of CPU tensors, and the host-overhead probe. The capture itself is tested on a GPU
(tests/gpu/test_cells_decode_gpu.py)."""
import pytest
import torch

import fusedrnn
from support import plain_kernels
from benchmarks import decode, host_overhead, model_cases, providers, workload
from fusedrnn import decoding
from fusedrnn.ops import common, library


@pytest.fixture
def kernels(monkeypatch):
    return plain_kernels.install(monkeypatch)


@pytest.fixture
def spies(monkeypatch):
    """Counts custom-op dispatches and contract checks."""
    seen = {"op": 0, "checks": 0}
    real_op, real_check = library._forward, common.check_recurrence_args

    def op(*a):
        seen["op"] += 1
        return real_op(*a)

    def check(*a, **k):
        seen["checks"] += 1
        return real_check(*a, **k)
    monkeypatch.setattr(library, "_forward", op)  # the recorded forward: the custom op's and eager's
    monkeypatch.setattr(fusedrnn.ops, "check_recurrence_args", check)
    return seen


def test_a_decode_step_of_a_module_skips_dispatch_and_repeated_checks(kernels, spies):
    torch.manual_seed(0)
    ours = fusedrnn.LSTM(4, 6, num_layers=2, batch_first=True, backend=kernels)
    ref = torch.nn.LSTM(4, 6, num_layers=2, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    x, state = torch.randn(3, 1, 4), (torch.randn(2, 3, 6), torch.randn(2, 3, 6))
    with torch.no_grad():
        got, want = ours(x, state), ref(x, state)
    torch.testing.assert_close(got, want)
    assert spies == {"op": 0, "checks": 0}  # torch.nn's checks ran once, in the module
    ours(x, state)[0].sum().backward()  # with autograd: the recorded forward, once per layer
    assert spies == {"op": 2, "checks": 0}
    gx = torch.randn(1, 3, 24)
    with torch.no_grad():
        fusedrnn.ops.recurrence("lstm", gx, state[0][0], state[1][0], ours.weight_hh_l0, None, backend=kernels)
    assert spies == {"op": 2, "checks": 1}  # the public entry point validates its arguments


def test_functional_rnn_takes_only_a_resolved_backend(kernels):
    """functional.rnn is the modules' layer: it trusts checked arguments, and refuses a backend
    name that the modules would have resolved first (the public entry point, ops.recurrence,
    validates its arguments: see above)."""
    from fusedrnn import functional  # noqa: PLC0415
    lstm = fusedrnn.LSTM(4, 6, backend=kernels)
    w = lstm._layer_weights()
    with pytest.raises(ValueError, match="fusedrnn.functional.rnn runs a resolved backend .* not 'auto'"):
        functional.rnn("lstm", torch.randn(2, 3, 4), torch.zeros(1, 3, 6), torch.zeros(1, 3, 6), w,
                       num_layers=1, bidirectional=False, backend="auto")


def test_captured_step_refuses_cpu_tensors():
    with pytest.raises(ValueError, match="CapturedStep captures CUDA work: x must be a CUDA tensor"):
        fusedrnn.CapturedStep(lambda x, s: (x, s), torch.zeros(2), torch.zeros(2))


class EagerStandIn:
    """CapturedStep's interface and semantics (static state and output, overwritten per call)
    with the step run eagerly instead of replayed: what GraphDecode relies on."""

    def __init__(self, step, x, state):
        self.step = step
        self.state = tuple(s.clone() for s in state) if isinstance(state, tuple) else state.clone()
        self.output = step(x, state)[0].clone()

    def reset(self, state):
        decoding._copy_into(self.state, state)

    def __call__(self, x):
        y, new = self.step(x, self.state)
        decoding._copy_into(self.state, new)
        self.output.copy_(y)
        return self.output


@pytest.mark.parametrize("api", ["module", "cells"])
def test_decode_variants_compute_the_module_loop(api, kernels, monkeypatch):
    monkeypatch.setattr(decoding, "CapturedStep", EagerStandIn)
    (case,) = model_cases.decode_cases(sizes=((2, 8),), steps=5, variants=((api, False),))
    master = providers.master_module(case).state_dict()
    base = workload.draw(case, torch.device("cpu"))
    args = workload.materialize(case, base, torch.float32)
    want = workload.forward(case, providers.build(providers.PROVIDERS["torch-cpu"], case, master, "fp32",
                                                  torch.device("cpu")), args)
    built = providers.build(providers.PROVIDERS["fusedrnn-reference"], case, master, "fp32", torch.device("cpu"))
    assert isinstance(built, decode.CellStack) == (api == "cells")
    with torch.no_grad():
        for module in (built, decode.GraphDecode(built)):
            got = workload.forward(case, module, args)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b)
        graphed = decode.GraphDecode(built)
        first = workload.forward(case, graphed, args)
        again = workload.forward(case, graphed, args)  # the same captured step, state reset per call
        for a, b in zip(first, again):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_graph_variants_need_a_gpu():
    case = model_cases.decode_cases(variants=(("cells", True),))[0]
    for name in ("torch-cpu", "fusedrnn-reference"):
        assert providers.why_not(providers.PROVIDERS[name], case, "fp32", torch.device("cpu")) == \
            "capturing a CUDA graph needs a CUDA device"
    assert "cells graph" in case.label
    assert all(not c.graph for c in model_cases.cpu_model_cases())


def test_host_overhead_reports_a_ratio_per_case(capsys):
    before = fusedrnn.backends.BACKENDS, dict(fusedrnn.backends.KERNEL_BACKENDS)
    assert host_overhead.main(["--calls", "2", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines[-3:]] == [f"ratio {case}" for case in host_overhead.CASES]
    assert all(float(line.split(":")[1]) > 0 for line in lines[-3:])
    assert (fusedrnn.backends.BACKENDS, fusedrnn.backends.KERNEL_BACKENDS) == before  # its stand-in is gone


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_without_autograd_a_state_returned_as_a_view_of_y_is_copied(kernels, monkeypatch, cell):
    """The direct path unaliases outputs as the custom op does: a user may modify y in place."""
    real = plain_kernels.forward

    def forward_with_views(*a):
        y, hT, cT, saved = real(*a)
        return y, y[-1], (y[-1] if cT is not None else None), saved
    monkeypatch.setattr(plain_kernels, "forward", forward_with_views)
    G = 4 if cell == "lstm" else 3
    gx, h0 = torch.randn(3, 2, G * 5), torch.randn(2, 5)
    c0 = torch.randn(2, 5) if cell == "lstm" else None
    with torch.no_grad():
        y, hT, *rest = fusedrnn.ops.recurrence(cell, gx, h0, c0, torch.randn(G * 5, 5), None, backend=kernels)
    storages = {t.untyped_storage().data_ptr() for t in (y, hT, *rest)}
    assert len(storages) == 2 + len(rest)
    torch.testing.assert_close(hT, y[-1])


def test_the_module_reads_the_weights_torch_would_under_functional_call():
    """The fused path takes torch.nn's own weight list (refreshed as torch refreshes it), so
    torch.func.functional_call's substituted parameters are the ones used."""
    torch.manual_seed(0)
    ours = fusedrnn.LSTM(3, 4, num_layers=2, bidirectional=True, backend="reference")
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    ref.load_state_dict(ours.state_dict())
    other = {k: torch.randn_like(v) for k, v in ours.state_dict().items()}
    x = torch.randn(5, 2, 3)
    got = torch.func.functional_call(ours, other, (x,))
    want = torch.func.functional_call(ref, other, (x,))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(ours(x), ref(x))  # and its own parameters again afterwards
