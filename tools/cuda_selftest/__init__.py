"""The C++ self-tests of csrc/ as their own module (_selftest), built on demand for the tests and
never installed: the launch path against a fake CUDA runtime, the host build of the cell math,
the C++ cell table. `build.load()` builds it (host compiler, seconds) and imports it."""
