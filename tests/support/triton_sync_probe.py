"""A kernel around one grid barrier (tiles.sync), compiled for sm_90 without a GPU; its
PTX is what tests/test_triton_sync_ptx.py reads. Run as a script (without
TRITON_INTERPRET=1, which cannot compile): prints the PTX."""
import triton
import triton.language as tl

from fusedrnn.ops.triton.tiles import sync


@triton.jit
def barrier_probe(p_cnt, p_err, p_x, target, budget):
    tl.store(p_x, 1.0)
    budget = sync(p_cnt, p_err, target, budget, True, False)
    tl.store(p_x + 1, tl.load(p_x + 2, cache_modifier=".cg") + budget)


def ptx() -> str:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    sig = {"p_cnt": "*i32", "p_err": "*i32", "p_x": "*fp32", "target": "i32", "budget": "i32"}
    k = triton.compile(ASTSource(barrier_probe, sig, {}), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 4})
    return k.asm["ptx"]


if __name__ == "__main__":
    print(ptx())
