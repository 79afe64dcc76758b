"""torch.export.export of models holding fusedrnn modules: what the exported graph holds per
backend, and that the exported program runs (other shapes too, where they are dynamic) and
matches torch.nn.

The kernel backends export as the custom op fusedrnn::rnn_layer_forward, whose fake
implementation gives the graph its shapes; the exported program calls the same op (import
fusedrnn before torch.export.load-ing one). The reference backend is traced as plain
PyTorch ops, unrolled over the traced sequence length; "auto" on the CPU is torch.nn
(aten.lstm / gru / rnn_* ops).
"""
import copy
import io

import pytest
import torch

import fusedrnn  # noqa: F401  (registers the custom ops a loaded program calls)
from support.backend_params import needs_triton, resolve
from support.export_models import CASES, assert_matches_torch, example_input, make
from support.parity import max_err

BACKENDS = ["auto", "reference", "kernels", pytest.param("triton", marks=needs_triton)]


def ops_in(ep) -> set:
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def holds_fused_op(ops) -> bool:
    return any(op.startswith("fusedrnn.rnn_layer_forward") for op in ops)


def holds_torch_rnn_op(ops) -> bool:
    return any(op.split(".")[1] in ("lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_relu_cell")
               for op in ops if op.startswith("aten."))


@pytest.mark.sampled  # every case and every backend; `--gates` runs the other pairs
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_exported_program_runs_and_matches_torch(case, backend, monkeypatch):
    model, twin = make(case, resolve(backend, monkeypatch))
    x = example_input(case)
    ep = torch.export.export(model, (x,))
    ops = ops_in(ep)
    # the graph runs what the eager module runs: the kernel op, or torch.nn's op, or neither
    kernel = backend in ("kernels", "triton")
    assert holds_fused_op(ops) == kernel, ops
    assert holds_torch_rnn_op(ops) == (backend == "auto"), ops
    with torch.no_grad():
        assert_matches_torch(ep.module()(x), twin, x)
    # saved and loaded, the program still runs the same op
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    with torch.no_grad():
        assert_matches_torch(torch.export.load(buf).module()(x), twin, x)


@pytest.mark.parametrize("backend", ["kernels", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("case", ["lstm_2layer_bidir", "gru_batch_first"])
def test_exported_program_with_dynamic_length_and_batch(case, backend, monkeypatch):
    """The kernel op's fake implementation keeps T and B symbolic. (torch.nn's own CPU RNN, what
    "auto" runs here, specializes T under torch.export in torch 2.13, as does the reference's loop.)"""
    model, twin = make(case, resolve(backend, monkeypatch))
    t_dim, b_dim = (1, 0) if CASES[case][2].get("batch_first") else (0, 1)
    dims = {t_dim: torch.export.Dim("steps", min=2, max=64), b_dim: torch.export.Dim("batch", min=2, max=64)}
    ep = torch.export.export(model, (example_input(case),), dynamic_shapes=({**dims},))
    for steps, batch in [(2, 5), (7, 2)]:
        x = example_input(case, steps=steps, batch=batch, seed=steps)
        with torch.no_grad():
            assert_matches_torch(ep.module()(x), twin, x)


@pytest.mark.parametrize("backend", ["kernels", pytest.param("triton", marks=needs_triton)])
def test_exported_program_backward_matches_torch(backend, monkeypatch):
    """The exported program is differentiable: the op's registered autograd runs the backward op."""
    model, twin = make("lstm_2layer_bidir", resolve(backend, monkeypatch))
    x = example_input("lstm_2layer_bidir")
    ep = torch.export.export(model, (x,))
    exported = ep.module()
    grads = []
    for m in (exported, twin, copy.deepcopy(twin).double()):
        xi = x.detach().to(next(m.parameters()).dtype).requires_grad_()
        sum(o.sum() for o in m(xi)).backward()
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    got, torch32, truth = grads
    assert len(got) == len(truth)
    err, err_torch = max_err(got, truth), max_err(torch32, truth)
    assert err <= 2 * err_torch + 1e-6, (err, err_torch)


def test_export_under_no_grad_records_an_inference_only_op(monkeypatch):
    """need_grad (save activations for backward) is traced from the grad mode: under no_grad
    the exported op saves nothing and still matches torch.nn."""
    model, twin = make("lstm_2layer_bidir", resolve("kernels", monkeypatch))
    x = example_input("lstm_2layer_bidir")
    for grad_enabled in (True, False):
        with torch.set_grad_enabled(grad_enabled):
            ep = torch.export.export(model, (x,))
        need_grad = [n.args[9] for n in ep.graph.nodes if str(n.target).startswith("fusedrnn.rnn_layer_forward")]
        assert need_grad and all(flag is grad_enabled for flag in need_grad), need_grad
        with torch.no_grad():
            assert_matches_torch(ep.module()(x), twin, x)
