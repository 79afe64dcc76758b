"""fusedrnn build: the metadata lives in pyproject.toml; this file adds what cannot be
static there: the CUDA extension fusedrnn._C (pybind11, no torch headers, built by
csrc_build.py) and the package fusedrnn_bench, installed from the benchmarks/ folder.

Environment:
    FUSEDRNN_SKIP_CUDA_BUILD=1   install without the extension (a pure-Python wheel)
    FUSEDRNN_CUDA_ARCHS="80;90"  SM architectures to compile for (default 80 and 90)
    CUDA_HOME / CUDA_PATH        where bin/nvcc is (else nvcc on PATH)

When a build is asked for and the extension cannot be built (no nvcc, or no pybind11 in
the build environment) the build stops with a message saying why and how to opt out:
pip shows a build's output only when the build fails (recent versions also show its
warnings), so a message alone could go unseen.
"""
import os
import sys
import warnings

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)  # setuptools.build_meta does not put the project folder on sys.path
from csrc_build import EXT_NAME, BuildExt, cuda_extensions, skip_reason  # noqa: E402

#: setup.py commands that produce an installable build (the metadata ones, egg_info,
#: dist_info and sdist, need no compiler and never fail for its absence)
BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install", "bdist_egg"}

BENCH_PACKAGE, BENCH_DIR = "fusedrnn_bench", "benchmarks"


def skip_requested() -> bool:
    return os.environ.get("FUSEDRNN_SKIP_CUDA_BUILD", "").lower() in ("1", "true", "yes", "on")


def missing_extension_error(reason: str) -> str:
    """The message a build stops with when it cannot build the extension."""
    return (
        f"fusedrnn: cannot build the CUDA extension {EXT_NAME}: {reason}.\n"
        "Without it the 'cuda' backend is unavailable (the 'triton', 'reference' and 'torch' "
        "backends still work).\n"
        "Either make nvcc and pybind11 available to the build, or install without the "
        "extension on purpose:\n"
        "    FUSEDRNN_SKIP_CUDA_BUILD=1 pip install ."
    )


def extensions(argv) -> list:
    """The extension to build, [] when skipped on request; SystemExit when a build command
    cannot build it."""
    reason = skip_reason()
    if reason and BUILD_COMMANDS & set(argv[1:]):
        if not skip_requested():
            raise SystemExit(missing_extension_error(reason))
        # recent pip versions show a build's warnings (as BuildBackendWarning); older ones need -v
        warnings.warn(f"fusedrnn: building without the CUDA extension {EXT_NAME} ({reason}): "
                      "the 'cuda' backend will be unavailable", stacklevel=1)
    return cuda_extensions()  # [] with a line that says why, when skipped


def packages() -> list:
    """fusedrnn and its subpackages, plus benchmarks/ (and its subpackages) as fusedrnn_bench:
    nothing generic lands at the top level of site-packages."""
    bench = [BENCH_PACKAGE] + [f"{BENCH_PACKAGE}.{p}" for p in find_packages(os.path.join(ROOT, BENCH_DIR))]
    return find_packages(ROOT, include=["fusedrnn", "fusedrnn.*"]) + bench


if __name__ == "__main__":
    setup(
        packages=packages(),
        package_dir={BENCH_PACKAGE: BENCH_DIR},
        ext_modules=extensions(sys.argv),
        cmdclass={"build_ext": BuildExt},
    )
