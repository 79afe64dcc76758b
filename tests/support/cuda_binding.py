"""Fake tensor tuples for calling the CUDA binding without a device (addresses are never read)."""
import pytest

C = pytest.importorskip("fusedrnn._C", reason="the CUDA extension is not built (no nvcc)")
F32, F16, BF16, I32, U8 = 0, 1, 2, 3, 4
G = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1, "gru_reset_before": 3}
S = {"lstm": 5, "gru": 5, "rnn_tanh": 1, "rnn_relu": 1, "gru_reset_before": 4}
_next = [0x10000]


def fake(shape, dtype=F32):
    """A (ptr, dtype_code, shape, strides) tuple for a contiguous tensor at a fake, aligned address."""
    strides, acc = [], 1
    for d in reversed(shape):
        strides.insert(0, acc)
        acc *= d
    _next[0] += 0x100000
    return (_next[0], dtype, tuple(shape), tuple(strides))


def device_usable():
    n, _ = C.device_count()
    return n > 0


no_device = pytest.mark.skipif(device_usable(), reason="a CUDA device is present: the no-device path cannot be shown")
