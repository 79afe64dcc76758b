"""The GPU-free compile gate: every kernel the library would launch on a target GPU,
compiled here for that GPU's architecture and checked for what would fail or be slow
there (does not compile, shared memory over the limit, a barrier grid that cannot be
co-resident, register spills). `python -m tools.compile_check --help`.

Each backend contributes rows through one function, `rows(spec, cases, jobs)`:
fusedrnn's Triton kernels in triton_rows.py, the CUDA extension in cuda_rows.py. The
rows, the device description and the flag rules are in rows.py.
"""
