"""Which cuDNN RNN algorithm a torch.nn baseline row ran.

`expected` follows PyTorch's own choice (aten/src/ATen/native/cudnn/RNN.cpp, get_algo):
packed input -> standard; else, for any dtype but float64, the small-hidden persistent
algorithm when H is small (forward: RNN H <= 384, LSTM/GRU H <= 192; backward: RNN
H <= 256, LSTM/GRU H <= 128); else persistent-static only for fp16 with one layer, one
direction, H <= 1024, H and the input size multiples of 128, on sm_80+ with >= 98 SMs
(not sm_86), and then LSTM with B % 8 == 0, B <= 128; RNN the same minus B >= 96 with
H >= 896; GRU never. Everything else: standard. Whether torch hands a bf16 RNN to cuDNN
at all depends on its version, so bf16 rows also record what was `observed`: the names
of the kernels one profiled call launched (on the GPU only).
"""
from __future__ import annotations

from .shapes import Case

STANDARD, PERSIST, SMALL_H = "standard", "persist-static", "persist-static-small-h"


def _small_h(cell: str, H: int, forward: bool) -> bool:
    rnn = cell.startswith("rnn_")
    if forward:
        return H <= (384 if rnn else 192)
    return H <= (256 if rnn else 128)


def _persist(case: Case, dtype: str, major: int, minor: int, sms: int) -> bool:
    common = (case.layers == 1 and not case.bidirectional and case.H <= 1024 and case.H % 128 == 0
              and case.I % 128 == 0)
    device = major >= 8 and sms >= 98 and minor != 6
    if dtype != "fp16" or not (common and device) or case.cell == "gru":
        return False
    ok_b = case.B % 8 == 0 and case.B <= 128
    if case.cell == "lstm":
        return ok_b
    return ok_b and (case.B < 96 or case.H < 896)


def algorithm(case: Case, dtype: str, forward: bool, capability=(9, 0), sms: int = 132) -> str:
    if case.packed:
        return STANDARD
    if _small_h(case.cell, case.H, forward):
        return SMALL_H
    if _persist(case, dtype, capability[0], capability[1], sms):
        return PERSIST
    return STANDARD


def expected(case: Case, dtype: str, mode: str, capability=(9, 0), sms: int = 132) -> str:
    """The label of a row: 'fw: X' or, for fwbw, 'fw: X, bw: Y' when the two differ."""
    fw = algorithm(case, dtype, True, capability, sms)
    if mode == "fw":
        return fw
    bw = algorithm(case, dtype, False, capability, sms)
    return fw if fw == bw else f"fw {fw}, bw {bw}"


def observe(call, top: int = 4) -> list[str]:
    """The `top` GPU kernels (by total time) of one call of `call()`, via torch.profiler;
    an empty list where profiling is not possible."""
    import torch  # noqa: PLC0415
    if not torch.cuda.is_available():
        return []
    try:
        from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda.synchronize()
        totals: dict[str, float] = {}
        for ev in prof.events():
            if getattr(ev, "device_type", None) is not None and "CUDA" in str(ev.device_type):
                totals[ev.name] = totals.get(ev.name, 0.0) + float(getattr(ev, "device_time_total", 0.0) or 0.0)
        return [name[:120] for name, _ in sorted(totals.items(), key=lambda kv: -kv[1])[:top]]
    except Exception:  # noqa: BLE001 - the label by rule still stands
        return []
