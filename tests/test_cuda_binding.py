"""The binding checks every value Python hands it before any CUDA call: bad sizes,
null pointers, dtype codes, strides, int32 overflow raise ValueError; a valid call on a
machine without a usable device raises a clear RuntimeError. No GPU needed.

The same for kernel contract v2: the binding's checks of every size and pointer of
two directions in one launch (h0 (D, B, P)) and of the LSTM projection (w_hr (D?, P, H), its
outputs m and dh), the plans of both, and what cuda.py reports and allocates for them.
a valid call gets past validation to the device error of a machine without a GPU."""
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
    a = bwd_args("gru_reset_before")  # d_gh == d_gx for it: d_gx serves as both
    a["d_gh"] = fake((5, 3, 21))
    _rejects(C.backward, a, "d_gh must be None for cell gru_reset_before")
    a = bwd_args("gru_reset_before")
    a["saved"] = fake((5, 3, 5, 7), F32)  # the GRU's 5 slots; this cell saves 4 (r, z, n, h_prev)
    _rejects(C.backward, a, r"saved must have shape \(5, 3, 4, 7\)")
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


H100 = cuda_ops.H100_LIMITS


def v2_fwd(cell="lstm", T=5, B=3, H=7, P=None, D=2, dtype=F32, saved=True):
    """Forward arguments of the v2 contract; P (LSTM) adds a projection, D=2 a leading D."""
    g, s, lstm = G[cell], S[cell], cell == "lstm"
    P = P or H
    lead = (D,) if D > 1 else ()
    return dict(cell=cell, reverse=False, gx=fake((T, B, D * g * H), dtype), h0=fake(lead + (B, P), dtype),
                c0=fake(lead + (B, H), dtype) if lstm else None, w_hh=fake(lead + (g * H, P), dtype),
                b_hh=fake(lead + (g * H,), dtype), lengths=fake((B,), I32), y=fake((T, B, D * P), dtype),
                hT=fake(lead + (B, P), dtype), cT=fake(lead + (B, H), dtype) if lstm else None,
                saved=fake(lead + (T, B, s, H), F32) if saved else None, workspace=fake((4096,), U8), stream=0,
                device=0, w_hr=fake(lead + (P, H), dtype) if P != H else None,
                m=fake(lead + (T, B, H), F32) if P != H and saved else None)


def v2_bwd(cell="lstm", T=5, B=3, H=7, P=None, D=2, dtype=F32):
    g, s, lstm = G[cell], S[cell], cell == "lstm"
    P = P or H
    lead = (D,) if D > 1 else ()
    return dict(cell=cell, reverse=False, dy=fake((T, B, D * P), dtype), dhT=fake(lead + (B, P), dtype),
                dcT=fake(lead + (B, H), dtype) if lstm else None, w_hh_t=fake(lead + (P, g * H), dtype),
                lengths=fake((B,), I32), saved=fake(lead + (T, B, s, H), F32),
                d_gx=fake((T, B, D * g * H), dtype), d_gh=fake((T, B, D * g * H), dtype) if cell == "gru" else None,
                dh0=fake(lead + (B, P), dtype), dc0=fake(lead + (B, H), dtype) if lstm else None,
                workspace=fake((4096,), U8), stream=0, device=0,
                w_hr_t=fake(lead + (H, P), dtype) if P != H else None,
                dh=fake(lead + (T, B, P), F32) if P != H else None)


def _passes_validation(fn, args):
    try:
        fn(**args)
    except RuntimeError as e:  # no device here: the error comes after validation
        assert "cannot use CUDA device" in str(e) or "kernel" in str(e), e
    except ValueError as e:
        pytest.fail(f"valid v2 arguments rejected: {e}")


@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("cell, P", [("lstm", None), ("lstm", 3), ("gru", None), ("rnn_tanh", None)])
def test_valid_v2_arguments_pass_validation(cell, P, D):
    for dtype in (F32, F16, BF16):
        _passes_validation(C.forward, v2_fwd(cell, P=P, D=D, dtype=dtype))
        _passes_validation(C.forward, v2_fwd(cell, P=P, D=D, dtype=dtype, saved=False))
        _passes_validation(C.backward, v2_bwd(cell, P=P, D=D, dtype=dtype))


@no_device
def test_valid_v2_call_without_device_raises_runtime_error():
    with pytest.raises(RuntimeError, match="cannot use CUDA device 0"):
        C.forward(**v2_fwd("lstm", P=3, D=2))


@pytest.mark.parametrize("key, shape, match", [
    ("h0", (2, 3, 6), r"h0 must have shape \(2, 3, 3\)"),
    ("h0", (3, 3, 3), r"h0 must be \(B, P\) or \(D, B, P\) with D 1 or 2"),
    ("h0", (1, 3, 3), r"w_hh must have shape \(1, 56, 3\)"),  # D = 1 read off h0: gx says H = 14
    ("c0", (2, 3, 3), r"c0 must have shape \(2, 3, 7\)"),
    ("c0", (3, 7), r"c0 must have shape \(2, 3, 7\)"),
    ("w_hh", (2, 28, 7), r"w_hh must have shape \(2, 28, 3\)"),
    ("w_hh", (28, 3), r"w_hh must have shape \(2, 28, 3\)"),
    ("b_hh", (28,), r"b_hh must have shape \(2, 28\)"),
    ("w_hr", (2, 3, 6), r"w_hr must have shape \(2, 3, 7\)"),
    ("w_hr", (3, 7), r"w_hr must have shape \(2, -1, 7\)"),
    ("w_hr", (2, 7, 7), r"proj_size 7 must be in \[1, H=7\)"),
    ("y", (5, 3, 3), r"y must have shape \(5, 3, 6\)"),
    ("hT", (3, 3), r"hT must have shape \(2, 3, 3\)"),
    ("cT", (2, 3, 3), r"cT must have shape \(2, 3, 7\)"),
    ("saved", (5, 3, 5, 7), r"saved must have shape \(2, 5, 3, 5, 7\)"),
    ("m", (2, 5, 3, 3), r"m must have shape \(2, 5, 3, 7\)"),
    ("gx", (5, 3, 28), r"not a multiple of 2 directions x 4 gates|h0 must have shape"),
])
def test_forward_rejects_bad_v2_sizes(key, shape, match):
    a = v2_fwd("lstm", P=3, D=2)
    a[key] = fake(shape, a[key][1])
    _rejects(C.forward, a, match)


@pytest.mark.parametrize("key", ["w_hr", "m", "h0", "c0", "w_hh", "y", "hT", "cT", "saved"])
def test_forward_rejects_null_v2_pointers(key):
    a = v2_fwd("lstm", P=3, D=2)
    _, d, shape, strides = a[key]
    a[key] = (0, d, shape, strides)
    _rejects(C.forward, a, f"{key} is a null pointer")


def test_forward_rejects_inconsistent_v2_options():
    a = v2_fwd("lstm", P=3, D=2)
    a["m"] = None
    _rejects(C.forward, a, "m is required")
    a = v2_fwd("lstm", P=3, D=2)
    a["w_hr"] = fake((2, 3, 7), F16)
    _rejects(C.forward, a, "w_hr has dtype float16, expected float32")
    a = v2_fwd("lstm", P=3, D=2)
    a["m"] = fake((2, 5, 3, 7), BF16)
    _rejects(C.forward, a, "m has dtype bfloat16, expected float32")
    a = v2_fwd("lstm", D=2)
    a["m"] = fake((2, 5, 3, 7), F32)
    _rejects(C.forward, a, "m must be None without a projection")
    a = v2_fwd("gru", D=2)
    a["w_hr"] = fake((2, 3, 7))
    _rejects(C.forward, a, "w_hr .* exists only for the lstm cell, not gru")
    a = v2_fwd("lstm", P=3, D=2)
    a["reverse"] = True
    _rejects(C.forward, a, "reverse must be False with two directions")
    a = v2_fwd("lstm", P=3, D=2)
    _, d, shape, strides = a["w_hr"]
    a["w_hr"] = (a["w_hr"][0] + 2, d, shape, strides)
    _rejects(C.forward, a, "w_hr data_ptr is not aligned")
    a = v2_fwd("lstm", P=3, D=2)
    a["w_hr"] = (a["w_hr"][0], d, shape, (21, 1, 3))
    _rejects(C.forward, a, "w_hr must be contiguous")


@pytest.mark.parametrize("key, shape, match", [
    ("dy", (5, 3, 3), r"dy must have shape \(5, 3, 6\)"),
    ("dhT", (3, 3, 3), r"dhT must be \(B, P\) or \(D, B, P\) with D 1 or 2"),
    ("dcT", (2, 3, 3), r"dcT must have shape \(2, 3, 7\)"),
    ("w_hh_t", (2, 7, 28), r"w_hh_t must have shape \(2, 3, 28\)"),
    ("w_hr_t", (2, 3, 7), r"w_hr_t must have shape \(2, 7, 3\)"),
    ("dh", (2, 5, 3, 7), r"dh must have shape \(2, 5, 3, 3\)"),
    ("dh", (5, 3, 3), r"dh must have shape \(2, 5, 3, 3\)"),
    ("saved", (2, 5, 3, 5, 3), r"saved must have shape \(2, 5, 3, 5, 7\)"),
    ("d_gx", (5, 3, 30), r"not a multiple of 2 directions x 4 gates"),
    ("dh0", (2, 3, 7), r"dh0 must have shape \(2, 3, 3\)"),
    ("dc0", (3, 7), r"dc0 must have shape \(2, 3, 7\)"),
])
def test_backward_rejects_bad_v2_sizes(key, shape, match):
    a = v2_bwd("lstm", P=3, D=2)
    a[key] = fake(shape, a[key][1])
    _rejects(C.backward, a, match)


@pytest.mark.parametrize("key", ["w_hr_t", "dh", "dy", "dhT", "dcT", "w_hh_t", "d_gx", "dh0", "dc0"])
def test_backward_rejects_null_v2_pointers(key):
    a = v2_bwd("lstm", P=3, D=2)
    _, d, shape, strides = a[key]
    a[key] = (0, d, shape, strides)
    _rejects(C.backward, a, f"{key} is a null pointer")


def test_backward_rejects_inconsistent_v2_options():
    a = v2_bwd("lstm", P=3, D=2)
    a["dh"] = None
    _rejects(C.backward, a, "dh is required")
    a = v2_bwd("lstm", P=3, D=2)
    a["w_hr_t"] = None  # P != H without a projection
    _rejects(C.backward, a, r"dhT must have shape \(2, 3, 7\)")
    a = v2_bwd("lstm", D=2)
    a["dh"] = fake((2, 5, 3, 7), F32)
    _rejects(C.backward, a, "dh must be None without a projection")
    a = v2_bwd("rnn_relu", D=2)
    a["w_hr_t"] = fake((2, 7, 3))
    _rejects(C.backward, a, "w_hr_t .* exists only for the lstm cell, not rnn_relu")
    a = v2_bwd("lstm", P=3, D=2)
    a["reverse"] = True
    _rejects(C.backward, a, "reverse must be False with two directions")
    a = v2_bwd("lstm", P=3, D=2)
    a["dh"] = fake((2, 5, 3, 3), F16)
    _rejects(C.backward, a, "dh has dtype float16, expected float32")


def test_plan_rejects_bad_projection_and_directions():
    for kw, match in [(dict(proj=7), r"proj must be 0, or in \[1, H\)"), (dict(proj=-1), "proj must be 0"),
                      (dict(directions=3), "directions must be 1 or 2"), (dict(directions=0), "directions")]:
        with pytest.raises(ValueError, match=match):
            C.plan_for(False, "lstm", F32, 3, 7, H100, **kw)
    with pytest.raises(ValueError, match="proj must be 0, or in"):
        C.plan_for(False, "gru", F32, 3, 7, H100, proj=3)


@pytest.mark.parametrize("mode", ["cta", "cluster", "grid", "step"])
@pytest.mark.parametrize("bwd", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_every_tier_plans_projection_and_two_directions(mode, bwd, dtype):
    """The small odd sizes the GPU tests force on each tier: the plan can run them."""
    units = 16 if mode in ("cluster", "grid") else 0
    for proj, D in ((0, 2), (7, 1), (7, 2)):
        p = cuda_ops.plan_for("lstm", dtype, 3, 33, backward=bwd, mode=mode, units=units, proj_size=proj,
                              directions=D)
        assert p["ok"] and p["tier"] == mode, (proj, D, p["reason"])
        if mode == "step":
            assert p["step"]["kernels"] == (2 if proj else 1)
            continue
        L = p["layout"]
        assert L["D"] == D and L["nst"] == (2 if proj else 1)
        assert p["grid"] == D * L["NBG"] * L["NU"]
        assert L["U"] * L["NU"] >= 33 and L["BG"] * L["NBG"] >= 3
        if proj:
            assert L["UP"] * L["NU"] >= proj
        assert L["smem"] <= H100["smem_optin"]


def test_two_directions_double_the_grid_at_the_encoder_anchor():
    one = cuda_ops.plan_for("gru", torch.bfloat16, 32, 512)
    two = cuda_ops.plan_for("gru", torch.bfloat16, 32, 512, directions=2)
    assert one["persistent"] and two["tier"] == one["tier"] and two["grid"] == 2 * one["grid"]
    assert "both directions in one launch" in two["reason"]
    # the directions run side by side on idle SMs: a step costs about what one direction's does
    assert one["estimate"]["step_us"] <= two["estimate"]["step_us"] < 2 * one["estimate"]["step_us"]


def test_projection_keeps_both_weights_resident_at_the_speech_anchor():
    for bwd in (False, True):
        p = cuda_ops.plan_for("lstm", torch.bfloat16, 16, 1024, backward=bwd, proj_size=256)
        assert p["persistent"] and p["layout"]["nst"] == 2, p["reason"]
        assert "W_hr's" in p["reason"]


def test_unsupported_covers_what_the_kernels_do_not_run():
    assert cuda_ops.unsupported("lstm", torch.float16, 1024, 256, directions=2) is None
    assert cuda_ops.unsupported("gru", torch.float32, 64, 0, directions=2) is None
    assert "proj_size" in cuda_ops.unsupported("rnn_relu", torch.float32, 64, 16)
    assert "proj_size" in cuda_ops.unsupported("lstm", torch.float32, 64, 64)
    assert "directions" in cuda_ops.unsupported("lstm", torch.float32, 64, 0, directions=3)
    assert "float64" in cuda_ops.unsupported("lstm", torch.float64, 64, 16, directions=2)


def test_saved_shapes_of_v2():
    gx, h0, c0 = torch.zeros(5, 3, 2 * 4 * 7), torch.zeros(2, 3, 4), torch.zeros(2, 3, 7)
    w_hr = torch.zeros(2, 4, 7)
    shapes = cuda_ops.saved_shapes("lstm", gx, h0, c0, None, None, None, False, True, w_hr)
    assert shapes == [((2, 5, 3, 5, 7), torch.float32), ((2, 5, 3, 7), torch.float32)]
    gx, h0 = torch.zeros(5, 3, 3 * 7), torch.zeros(3, 7)
    assert cuda_ops.saved_shapes("gru", gx, h0, None, None, None, None, False, True) == [
        ((5, 3, 5, 7), torch.float32)]
    assert cuda_ops.saved_shapes("gru", gx, h0, None, None, None, None, False, False) == []
