"""torch.onnx.export(..., dynamo=True) of models holding fusedrnn modules, run by onnxruntime,
against torch.nn in float64.

ONNX cannot hold fusedrnn's custom op, so under ONNX export the modules run their torch.nn
twin, written as the standard ONNX LSTM / GRU / RNN operators — except an LSTM with
proj_size, and the reference backend, which export the reference loop as plain ops with
fixed shapes (fusedrnn/onnx_export.py says why). Needs the optional packages onnx,
onnxscript and onnxruntime (requirements-dev.txt; the `export` extra).
"""
import pytest
import torch

import fusedrnn
from support.backend_params import needs_triton, resolve
from support.export_models import CASES, assert_matches_torch, example_input, make

for _package in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(_package, reason=f"{_package} is not installed (pip install 'fusedrnn[export]')")
import onnxruntime  # noqa: E402

BACKENDS = ["auto", "reference", "kernels", pytest.param("triton", marks=needs_triton)]


def export(model, x, path, dynamic_shapes=None):
    """Export to `path`; the set of ONNX (domain, op type) pairs in the main graph."""
    program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=dynamic_shapes)
    program.save(str(path))
    return {(n.domain, n.op_type) for n in program.model_proto.graph.node}


def run_onnx(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


@pytest.mark.sampled  # every case and every backend; `--gates` runs the other pairs
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_onnx_export_runs_in_onnxruntime_and_matches_torch(case, backend, monkeypatch, tmp_path):
    model, twin = make(case, resolve(backend, monkeypatch))
    x = example_input(case)
    nodes = export(model, x, tmp_path / "model.onnx")
    assert all(domain in ("", "ai.onnx") for domain, _ in nodes), nodes  # standard operators only
    cell, is_cell, kw = CASES[case]
    if cell in ("lstm", "gru") and not is_cell and backend != "reference" and not kw.get("proj_size"):
        # the torch.nn twin was exported: ONNX's own LSTM / GRU operator, not an unrolled loop
        # (torch 2.13 writes torch.nn.RNN unrolled, as plain ops, whatever fusedrnn does)
        assert ("", cell.upper()) in nodes, nodes
    assert_matches_torch(run_onnx(tmp_path / "model.onnx", x), twin, x)


@pytest.mark.parametrize("backend", ["kernels", pytest.param("triton", marks=needs_triton)])
def test_module_runs_its_backend_again_after_onnx_export(backend, monkeypatch, tmp_path):
    model, _ = make("lstm_2layer_bidir", resolve(backend, monkeypatch))
    x = example_input("lstm_2layer_bidir")
    export(model, x, tmp_path / "model.onnx")
    assert model.rnn.choose_backend(x).name == "triton"


#: what stays dynamic in the ONNX model: the batch. torch 2.13 fixes the sequence length of
#: torch.nn.LSTM when exporting it, and of torch.nn.GRU on every export after a process's first
#: (plain torch.nn modules alike), so the length is not asked to stay dynamic here
DYNAMIC = {"lstm_2layer_bidir": ("batch",), "gru_batch_first": ("batch",)}


@pytest.mark.parametrize("backend", ["kernels", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("case", list(DYNAMIC))
def test_onnx_export_with_dynamic_shapes(case, backend, monkeypatch, tmp_path):
    model, twin = make(case, resolve(backend, monkeypatch))
    axis = dict(zip(("steps", "batch"), (1, 0) if CASES[case][2].get("batch_first") else (0, 1)))
    dims = {axis[name]: torch.export.Dim(name, min=2, max=64) for name in DYNAMIC[case]}
    export(model, example_input(case), tmp_path / "model.onnx", dynamic_shapes=(dims,))
    for steps, batch in [(2, 5), (7, 2)]:
        steps = steps if "steps" in DYNAMIC[case] else 4
        x = example_input(case, steps=steps, batch=batch, seed=batch)
        assert_matches_torch(run_onnx(tmp_path / "model.onnx", x), twin, x)
