"""The binding checks every value Python hands it before any CUDA call: bad sizes,
null pointers, dtype codes, strides, int32 overflow raise ValueError; a valid call on a
machine without a usable device raises a clear RuntimeError. No GPU needed."""
import pytest
import torch

import fusedrnn
from fusedrnn.ops import cuda as cuda_ops
from support.cuda_binding import BF16, C, F16, F32, fake, G, I32, no_device, S, U8


def fwd_args(cell="lstm", T=5, B=3, H=7, dtype=F32, lengths=True, saved=True):
    g, s = G[cell], S[cell]
    lstm = cell == "lstm"
    return dict(cell=cell, reverse=False, gx=fake((T, B, g * H), dtype), h0=fake((B, H), dtype),
                c0=fake((B, H), dtype) if lstm else None, w_hh=fake((g * H, H), dtype), b_hh=fake((g * H,), dtype),
                lengths=fake((B,), I32) if lengths else None, y=fake((T, B, H), dtype), hT=fake((B, H), dtype),
                cT=fake((B, H), dtype) if lstm else None, saved=fake((T, B, s, H), F32) if saved else None,
                workspace=fake((4096,), U8), stream=0, device=0)


def bwd_args(cell="lstm", T=5, B=3, H=7, dtype=F32):
    g, s = G[cell], S[cell]
    lstm = cell == "lstm"
    return dict(cell=cell, reverse=True, dy=fake((T, B, H), dtype), dhT=fake((B, H), dtype),
                dcT=fake((B, H), dtype) if lstm else None, w_hh_t=fake((H, g * H), dtype), lengths=fake((B,), I32),
                saved=fake((T, B, s, H), F32), d_gx=fake((T, B, g * H), dtype),
                d_gh=fake((T, B, g * H), dtype) if cell == "gru" else None, dh0=fake((B, H), dtype),
                dc0=fake((B, H), dtype) if lstm else None, workspace=fake((4096,), U8), stream=0, device=0)


@no_device
@pytest.mark.parametrize("cell", list(G))
@pytest.mark.parametrize("dtype", [F32, F16, BF16])
def test_valid_call_without_device_raises_runtime_error(cell, dtype):
    with pytest.raises(RuntimeError, match=r"fusedrnn._C: cannot use CUDA device 0: cuda\w+"):
        C.forward(**fwd_args(cell, dtype=dtype))
    with pytest.raises(RuntimeError, match="cannot use CUDA device 0"):
        C.backward(**bwd_args(cell, dtype=dtype))


@no_device
def test_plan_and_device_count_without_device():
    n, err = C.device_count()
    assert n == 0 and err
    with pytest.raises(RuntimeError, match="cannot use CUDA device"):
        C.plan(False, "lstm", F32, 8, 128, 0)


def test_valid_arguments_pass_validation_in_every_optional_combination():
    """Validation accepts what cuda.py passes; only the CUDA call itself can fail then."""
    for cell in G:
        for lengths in (True, False):
            for saved in (True, False):
                a = fwd_args(cell, lengths=lengths, saved=saved)
                a["b_hh"] = None if not saved else a["b_hh"]
                try:
                    C.forward(**a)
                except RuntimeError as e:  # no device here: the error comes after validation
                    assert "cannot use CUDA device" in str(e) or "kernel" in str(e)
                except ValueError as e:
                    pytest.fail(f"valid {cell} arguments rejected: {e}")


def _rejects(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(**args)


@pytest.mark.parametrize("key", ["gx", "h0", "c0", "w_hh", "y", "hT", "cT", "workspace"])
def test_forward_rejects_null_pointers(key):
    a = fwd_args("lstm")
    p, d, shape, strides = a[key]
    a[key] = (0, d, shape, strides)
    _rejects(C.forward, a, f"{key} is a null pointer")


@pytest.mark.parametrize("key", ["gx", "h0", "w_hh", "y", "hT", "workspace"])
def test_forward_rejects_missing_required(key):
    a = fwd_args("gru")
    a[key] = None
    _rejects(C.forward, a, "required|gx is required")


@pytest.mark.parametrize("key, shape, match", [
    ("h0", (3, 8), r"h0 must have shape \(3, 7\)"),
    ("c0", (2, 7), r"c0 must have shape"),
    ("w_hh", (28, 8), r"w_hh must have shape \(28, 7\)"),
    ("b_hh", (27,), r"b_hh must have shape \(28,\)"),
    ("lengths", (4,), r"lengths must have shape \(3,\)"),
    ("y", (5, 3, 8), r"y must have shape"),
    ("saved", (5, 3, 4, 7), r"saved must have shape \(5, 3, 5, 7\)"),
    ("workspace", (2, 3), r"workspace must be 1-D"),
])
def test_forward_rejects_bad_sizes(key, shape, match):
    a = fwd_args("lstm")
    p, d, _, _ = a[key]
    a[key] = fake(shape, d)
    _rejects(C.forward, a, match)


def test_forward_rejects_bad_gx():
    a = fwd_args("lstm")
    a["gx"] = fake((5, 3, 30))  # 30 is not 4*H
    _rejects(C.forward, a, "not a multiple of 4 gates")
    a["gx"] = fake((3, 28))
    _rejects(C.forward, a, "gx must be 3-D")
    a = fwd_args("gru")
    a["gx"] = fake((0, 3, 21))
    _rejects(C.forward, a, "must be >= 1")


@pytest.mark.parametrize("key, code, match", [
    ("h0", F16, "h0 has dtype float16, expected float32"),
    ("w_hh", BF16, "w_hh has dtype bfloat16"),
    ("lengths", F32, "lengths has dtype float32, expected int32"),
    ("saved", F16, "saved has dtype float16, expected float32"),
    ("workspace", F32, "workspace has dtype float32, expected uint8"),
    ("h0", 7, "unknown dtype code 7"),
    ("h0", -1, "unknown dtype code -1"),
])
def test_forward_rejects_mismatched_dtype_codes(key, code, match):
    a = fwd_args("lstm")
    p, _, shape, strides = a[key]
    a[key] = (p, code, shape, strides)
    _rejects(C.forward, a, match)


def test_forward_rejects_int32_gx():
    a = fwd_args("rnn_tanh", dtype=I32)
    _rejects(C.forward, a, "the CUDA kernels take float32, float16 or bfloat16")


def test_forward_rejects_non_contiguous_and_misaligned():
    a = fwd_args("lstm")
    p, d, shape, strides = a["gx"]
    a["gx"] = (p, d, shape, (strides[0], 1, shape[1]))
    _rejects(C.forward, a, "gx must be contiguous")
    a = fwd_args("lstm")
    p, d, shape, strides = a["h0"]
    a["h0"] = (p + 2, d, shape, strides)
    _rejects(C.forward, a, "not aligned")
    a = fwd_args("lstm", dtype=BF16)
    p, d, shape, strides = a["h0"]
    a["h0"] = (p + 1, d, shape, strides)
    _rejects(C.forward, a, "not aligned")


def test_forward_rejects_malformed_tuples():
    a = fwd_args("lstm")
    a["h0"] = (1, 2, 3)
    _rejects(C.forward, a, r"h0 must be None or a tuple")
    a = fwd_args("lstm")
    p, d, shape, strides = a["h0"]
    a["h0"] = (p, d, shape, strides[:1])
    _rejects(C.forward, a, "shape and strides differ")
    a = fwd_args("lstm")
    a["h0"] = (-16, d, shape, strides)
    _rejects(C.forward, a, "negative data_ptr")
    a = fwd_args("lstm")
    a["h0"] = (p, d, (3, -7), strides)
    _rejects(C.forward, a, "negative size")
    a = fwd_args("lstm")
    a["h0"] = (p, d, ("3", 7), strides)
    _rejects(C.forward, a, "must be an int")


def test_forward_rejects_int32_overflow():
    B, H = 70000, 8000  # B*4*H > 2^31
    a = fwd_args("lstm", T=2, B=1, H=1)
    a.update(gx=fake((2, B, 4 * H)), h0=fake((B, H)), c0=fake((B, H)), w_hh=fake((4 * H, H)),
             b_hh=fake((4 * H,)), lengths=None, y=fake((2, B, H)), hT=fake((B, H)), cT=fake((B, H)),
             saved=None)
    _rejects(C.forward, a, "exceeds the int32 range")
    a = fwd_args("rnn_tanh", T=1, B=1, H=1)
    H = 50000  # H*H > 2^31
    a.update(gx=fake((1, 1, H)), h0=fake((1, H)), w_hh=fake((H, H)), b_hh=None, lengths=None,
             y=fake((1, 1, H)), hT=fake((1, H)), saved=None)
    _rejects(C.forward, a, r"G\*H\*H")


def test_forward_rejects_cell_specific_tensors():
    a = fwd_args("gru")
    a["c0"] = fake((3, 7))
    _rejects(C.forward, a, "c0 must be None for cell gru")
    a = fwd_args("lstm")
    a["cT"] = None
    _rejects(C.forward, a, "cT is required")
    a = fwd_args("lstm")
    a["cell"] = "transformer"
    _rejects(C.forward, a, "unknown cell 'transformer'")


def test_rejects_bad_launch_values():
    a = fwd_args("lstm")
    a["stream"] = -1
    _rejects(C.forward, a, "stream")
    a = fwd_args("lstm")
    a["device"] = -2
    _rejects(C.forward, a, "device index -2")
    a = fwd_args("lstm")
    a["mode"] = "fast"
    _rejects(C.forward, a, "unknown mode 'fast'; expected auto, persistent, cta, cluster, grid or step")
    a = fwd_args("lstm")
    a["units"] = -1
    _rejects(C.forward, a, "units must be in")
    a = fwd_args("lstm")
    a["workspace"] = (a["workspace"][0] + 8, U8, (4096,), (1,))
    _rejects(C.forward, a, "16-byte aligned")


def test_backward_rejects_bad_arguments():
    a = bwd_args("gru")
    a["d_gh"] = None
    _rejects(C.backward, a, "d_gh is required")
    a = bwd_args("gru")
    a["d_gh"] = a["d_gx"]
    _rejects(C.backward, a, "must not alias")
    a = bwd_args("lstm")
    a["d_gh"] = fake((5, 3, 28))
    _rejects(C.backward, a, "d_gh must be None for cell lstm")
    a = bwd_args("lstm")
    a["w_hh_t"] = fake((28, 7))
    _rejects(C.backward, a, r"w_hh_t must have shape \(7, 28\)")
    a = bwd_args("rnn_relu")
    a["saved"] = None
    _rejects(C.backward, a, "saved is required")
    a = bwd_args("lstm")
    p, d, shape, strides = a["dcT"]
    a["dcT"] = (0, d, shape, strides)
    _rejects(C.backward, a, "dcT is a null pointer")
    a = bwd_args("lstm", dtype=F16)
    p, _, shape, strides = a["dh0"]
    a["dh0"] = (p, BF16, shape, strides)
    _rejects(C.backward, a, "dh0 has dtype bfloat16, expected float16")


def test_plan_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown cell"):
        C.plan(False, "lstmx", F32, 8, 128, 0)
    with pytest.raises(ValueError, match="float type"):
        C.plan(False, "lstm", I32, 8, 128, 0)
    with pytest.raises(ValueError, match="B and H"):
        C.plan(False, "lstm", F32, 0, 128, 0)
    with pytest.raises(ValueError, match="int32 range"):
        C.plan(False, "lstm", F32, 1, 2**30, 0)


# --- the Python side ------------------------------------------------------------------

def test_availability_reasons():
    assert cuda_ops.availability(torch.device("cpu")) == "no CUDA device: the input is on cpu"
    assert cuda_ops.availability(torch.device("cuda", 0)) is None  # built: only the device decides


def test_availability_when_not_built(monkeypatch):
    err = ModuleNotFoundError("No module named 'fusedrnn._C'", name="fusedrnn._C")
    monkeypatch.setattr(cuda_ops, "_C", None)
    monkeypatch.setattr(cuda_ops, "_IMPORT_ERROR", err)
    assert "not built" in cuda_ops.availability(torch.device("cuda"))
    monkeypatch.setattr(cuda_ops, "_IMPORT_ERROR", ImportError("undefined symbol: foo"))
    assert "undefined symbol: foo" in cuda_ops.availability(torch.device("cuda"))


def test_unsupported():
    assert cuda_ops.unsupported("lstm", torch.float32, 128, 0) is None
    assert cuda_ops.unsupported("gru", torch.bfloat16, 7, 0) is None
    assert cuda_ops.unsupported("lstm", torch.float32, 128, 64) is None  # the projection (contract v2)
    assert cuda_ops.unsupported("lstm", torch.bfloat16, 128, 64, directions=2) is None
    assert "proj_size" in cuda_ops.unsupported("gru", torch.float32, 128, 64)
    assert "proj_size" in cuda_ops.unsupported("lstm", torch.float32, 128, 128)
    assert "directions" in cuda_ops.unsupported("lstm", torch.float32, 128, 0, directions=3)
    assert "float64" in cuda_ops.unsupported("rnn_tanh", torch.float64, 128, 0)
    assert "int32" in cuda_ops.unsupported("lstm", torch.float16, 40000, 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only report")
def test_available_backends_reports_cuda_on_cpu():
    ok, why = fusedrnn.available_backends()["cuda"]
    # asked about the machine, not an input (issue 17 item 9): no "the input is on cpu"
    assert not ok and why == "this machine has no CUDA device (torch.cuda.is_available() is False)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only errors")
def test_cuda_backend_on_cpu_tensors_raises():
    gx, h0, c0 = torch.randn(3, 2, 16), torch.randn(2, 4), torch.randn(2, 4)
    w, b = torch.randn(16, 4), torch.randn(16)
    with pytest.raises(RuntimeError, match="no CUDA device: the input is on cpu"):
        fusedrnn.ops.recurrence("lstm", gx, h0, c0, w, b, backend="cuda")
    with pytest.raises(RuntimeError, match="no CUDA device"):  # the launcher itself refuses too
        cuda_ops.forward("lstm", gx, h0, c0, w, b, None, False, True)


def test_arg_tuples_match_what_the_binding_expects():
    t = torch.zeros(2, 3, 4, dtype=torch.bfloat16)
    ptr, code, shape, strides = cuda_ops._arg(t)
    assert ptr == t.data_ptr() and code == C.DTYPE_CODES["bfloat16"] and shape == (2, 3, 4) and strides == (12, 4, 1)
    assert cuda_ops._arg(None) is None
    with pytest.raises(TypeError):
        cuda_ops._arg(torch.zeros(2, dtype=torch.float64))
