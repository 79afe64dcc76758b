"""fusedrnn's benchmark suite against cuDNN (`python -m benchmarks.run`, see benchmarks/README.md).

Nothing here imports fusedrnn or triton at import time: `benchmarks.run` must set
TRITON_INTERPRET=1 first when there is no GPU.
"""
