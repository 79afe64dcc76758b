"""Every Triton launch asks for fused multiply-adds (config.FP_FUSION): Triton 3.9 warns that
its default turns them off in 3.10. Resolved by Triton's own option parser for sm_90, the
launch options keep them on even where the default says off (TRITON_DEFAULT_FP_FUSION=0, as
3.10 will), and parse without the 3.9 warning."""
from __future__ import annotations

import warnings

import torch
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend

from fusedrnn.ops.triton import config, launch


def _resolved(options: dict) -> bool:
    return CUDABackend(GPUTarget("cuda", 90, 32)).parse_options(options).enable_fp_fusion


def test_launch_options_keep_fp_fusion_where_the_default_is_off(monkeypatch):
    lau = config.choose("lstm", 8, 16, torch.float32)
    options = launch._options(lau)
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "0")
    assert _resolved(options) is True
    monkeypatch.delenv("TRITON_DEFAULT_FP_FUSION")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _resolved(options) is True
