"""What the built extension's sm_90 machine code does in the persistent kernels: the
exchanged vector (h forward, d_gh backward) reaches shared memory through 16-byte
asynchronous copies (LDGSTS) or the tensor copy engine (UTMALDG), feeds the tensor cores
through ldmatrix (LDSM) into mma (HMMA), and is never read with scalar L2-coherent loads
(the old kernels' LDG.E.U16.STRONG.GPU per k-tile). The only gpu-scope loads left are the
32-bit flag polls of the grid tier. Skipped only where no cuobjdump exists (Triton ships one).
"""
import collections
import glob
import os
import re
import subprocess

import pytest

from tools.compile_check import cuda_rows

C = pytest.importorskip("fusedrnn._C", reason="the CUDA extension is not built (no nvcc)")
CUOBJDUMP = cuda_rows._tool("cuobjdump")
pytestmark = pytest.mark.skipif(CUOBJDUMP is None, reason="no cuobjdump on PATH, beside nvcc or in Triton")
OPS = re.compile(r"\b(LDGSTS|UTMALDG|LDSM|HMMA|HGMMA|LDG)((?:\.\w+)*)")


@pytest.fixture(scope="module")
def persistent_sass() -> dict:
    """{mangled name: Counter of (opcode, suffix)} of every persistent kernel's sm_90 SASS."""
    so = C.__file__
    out = subprocess.run([CUOBJDUMP, "-sass", "-arch", "sm_90", so], capture_output=True, text=True)
    if out.returncode != 0 or "Function :" not in out.stdout:
        pytest.skip(f"the extension has no sm_90 code to read (FUSEDRNN_CUDA_ARCHS?): {out.stderr[:200]}")
    kernels = {}
    for part in re.split(r"\n\s*Function : ", out.stdout)[1:]:
        name = part.split("\n", 1)[0].strip()
        if "persistent_kernel" in name:
            kernels[name] = collections.Counter(OPS.findall(part))
    return kernels


def two_stage(name: str) -> bool:
    """The LSTM projection's kernels (W_hh h, then W_hr m) and the reset-before GRU's (W_hr,z h,
    then W_hn (r ⊙ h)): two exchanges a step, their inputs one step ahead."""
    return "ProjPass" in name or "ResetPass" in name


def stages(name: str) -> int:
    """Exchange stages per step: 2 for the two-stage kernels, else 1."""
    return 2 if two_stage(name) else 1


def step_copies(name: str) -> int:
    """Copies of the step in the step loop: its pass's input depth (csrc/persistent.cuh unrolls
    the loop by two where the inputs are loaded two steps ahead)."""
    from tools.compile_check import cuda_walks
    plain, proj = cuda_walks.input_depths()
    return proj if two_stage(name) else plain


@pytest.mark.gate
def test_every_persistent_kernel_is_present(persistent_sass):
    # cells x dtypes x passes, plain and regularised (zoneout, recurrent dropout), plus the LSTM
    # projection's and the reset-before GRU's two passes per dtype
    assert len(persistent_sass) == 2 * 4 * 3 * 2 + 2 * 3 * 2, sorted(persistent_sass)
    assert sum("RegPass" in n for n in persistent_sass) == 4 * 3 * 2
    assert sum(stages(n) == 2 for n in persistent_sass) == 2 * 3 * 2


@pytest.mark.gate
def test_exchanged_vector_is_copied_asynchronously_into_ldmatrix_and_mma(persistent_sass):
    for name, ops in persistent_sass.items():
        asynchronous = sum(n for (op, _), n in ops.items() if op in ("LDGSTS", "UTMALDG"))
        assert asynchronous > 0, f"{name}: no LDGSTS/UTMALDG: {dict(ops)}"
        assert all(s.endswith(".128") for (op, s) in ops if op == "LDGSTS"), f"{name}: copies under 16 bytes"
        assert any(op == "LDSM" for op, _ in ops), f"{name}: no ldmatrix"
        assert any(op in ("HMMA", "HGMMA") for op, _ in ops), f"{name}: no tensor-core mma"


@pytest.mark.gate
def test_no_scalar_coherent_loads_of_the_exchanged_vector(persistent_sass):
    for name, ops in persistent_sass.items():
        strong = {s: n for (op, s), n in ops.items() if op == "LDG" and "STRONG" in s}
        assert all(s == ".E.STRONG.GPU" for s in strong), f"{name}: 16/64/128-bit coherent loads {strong}"
        # the grid tier's flag polls, inlined once per stage: a sweep polls up to 5 producers per
        # lane (csrc/exchange.cuh, NU <= 160) and is issued at 6 places (one pass: its sweep and
        # wait loop; several passes: the first sweep, before a pass's matmul, the wait loop
        # inlined twice), plus the timeout report's re-read in each of the 3 wait loops; once per
        # copy of the step in the loop
        assert sum(strong.values()) <= (5 * 6 + 3) * stages(name) * step_copies(name), \
            f"{name}: {strong} coherent loads; only the flag polls should remain"


def test_the_check_fails_on_the_old_kernel_shape():
    """The same parse on a SASS excerpt of the old kernels (scalar loads, no copies) must fail."""
    old = "LDG.E.U16.STRONG.GPU R4, desc[UR6][R2.64] ;\nHMMA.16816.F32.BF16 R8, R12, R16, R8 ;\n" * 8
    ops = collections.Counter(OPS.findall(old))
    assert not any(op in ("LDGSTS", "UTMALDG") for op, _ in ops)
    assert any(s != ".E.STRONG.GPU" for (op, s) in ops if op == "LDG")


def test_cuobjdump_is_found_where_triton_ships_it():
    shipped = glob.glob(os.path.join(os.path.dirname(__import__("triton").__file__), "backends", "nvidia", "bin",
                                     "cuobjdump"))
    if shipped:
        assert CUOBJDUMP is not None
