"""fusedrnn build: pure-Python package plus, when nvcc is found, the CUDA extension
fusedrnn._C (pybind11, no torch headers).

Environment:
    FUSEDRNN_SKIP_CUDA_BUILD=1   never build the extension
    FUSEDRNN_CUDA_ARCHS="80;90"  SM architectures to compile for (default 80 and 90)
"""

from setuptools import find_packages, setup

from csrc_build import cuda_extensions, BuildExt  # noqa: E402  (next to this file)

setup(
    name="fusedrnn",
    version="0.1.0",
    description="Fused LSTM/GRU/RNN forward and backward kernels (Triton and CUDA) for PyTorch",
    packages=find_packages(include=["fusedrnn", "fusedrnn.*", "benchmarks", "benchmarks.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "triton>=3.0; platform_system=='Linux'"],
    extras_require={"test": ["pytest", "hypothesis", "pytest-benchmark"],
                    "bench": ["matplotlib", "tqdm"]},
    ext_modules=cuda_extensions(),
    cmdclass={"build_ext": BuildExt},
    entry_points={"console_scripts": ["fusedrnn-bench=benchmarks.run:main"]},
)
