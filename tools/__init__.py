"""fusedrnn's developer tooling, run from a checkout and never installed: the device check for a
lent GPU (device_check), the sm_90 compile gate and critical-path reader (compile_check), the
host build that runs the CUDA kernels on a CPU (cuda_emu) and the C++ self-tests' module
(cuda_selftest). tools/README.md says what each is for; their tests are in tools/tests."""
