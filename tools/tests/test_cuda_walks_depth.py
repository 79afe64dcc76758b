"""The persistent kernel's step loop runs two steps a trip where its pass loads inputs two
steps ahead (csrc/persistent.cuh, passes.cuh kInputDepth): the compile gate's walk
(tools/compile_check/cuda_walks.py) reads that from the source the build compiled and tells
sass_path.analyse, so such a loop's counts are per step, not per trip."""
from __future__ import annotations

import pytest

from tools.compile_check import cuda_walks, sass_path

# a step loop unrolled by two: each step reads the input loaded one trip (two steps) before
TWO_DEEP = """
        /*0000*/                   FADD R30, R31, R32 ;
        /*0010*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0020*/                   HMMA.16816.F32.BF16 R40, R20, R24, RZ ;
        /*0030*/                   LDG.E R31, desc[UR4][R8.64] ;
        /*0040*/                   FADD R34, R33, R32 ;
        /*0050*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0060*/                   HMMA.16816.F32.BF16 R42, R20, R24, RZ ;
        /*0070*/                   LDG.E R33, desc[UR4][R10.64] ;
        /*0080*/               @P0 BRA 0x0 ;
"""


def test_the_depths_are_read_from_the_compiled_source():
    plain, proj = cuda_walks.input_depths()
    assert (plain, proj) == (2, 1)  # csrc/passes.cuh: the projection passes spill with two buffers
    assert cuda_walks.steps_per_trip("persistent|fwd|gru|bf16") == plain
    assert cuda_walks.steps_per_trip("persistent|bwd|lstm|fp32") == plain
    assert cuda_walks.steps_per_trip("persistent|bwd-proj|lstm|bf16") == proj
    assert cuda_walks.input_depths("constexpr int kInputDepth = 1, kInputDepthProj = 1;") == (1, 1)
    with pytest.raises(RuntimeError, match="kInputDepth"):
        cuda_walks.input_depths("constexpr int kDepth = 2;")


def test_a_trip_of_two_steps_is_counted_per_step():
    insts = sass_path.parse("Function : k\n" + TWO_DEEP)["k"]
    layout = dict.fromkeys(cuda_walks.LAYOUT_FIELDS, 1) | {"stages": [dict.fromkeys(cuda_walks.STAGE_FIELDS, 1)]}
    two = cuda_walks.walk(insts, 0x80, layout, steps=2)
    assert two["round_trips"] == 0.5 and two["barriers"] == 1 and two["insts_per_step"] == 4.5
    assert cuda_walks.walk(insts, 0x80, layout)["round_trips"] == 1  # the same loop read as one step a trip
