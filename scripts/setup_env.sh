# Sourced by scripts/test.sh and scripts/bench.sh: a project-local virtual environment with
# the pinned packages of requirements-dev.txt and fusedrnn installed in editable mode (the
# CUDA extension fusedrnn._C built when nvcc is present). Idempotent: reinstalls when the
# pins or the packaging change, rebuilds the extension only when csrc/ or its builder did.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FUSEDRNN_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

stamp="$VENV/.fusedrnn-installed"
want="$(cat "$ROOT/requirements-dev.txt" "$ROOT/setup.py" "$ROOT/pyproject.toml" | sha1sum | cut -d' ' -f1)"
fresh=0
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    fresh=1
    python -m pip install -q --upgrade pip >/dev/null
    # The CUDA emulator's host build (tools/cuda_emu, about a minute of compiling, which the
    # emulated tests would otherwise wait for) needs only pybind11 and filelock: installed
    # first, it compiles on the core pip leaves idle. Its log: build/emu-background.log; a
    # failed build here is retried by the first test that needs it, which reports the error.
    python -m pip install -q "$(grep -E '^pybind11' "$ROOT/requirements-dev.txt")" filelock
    mkdir -p "$ROOT/build"
    (cd "$ROOT" && nohup python tools/cuda_emu/build.py >"$ROOT/build/emu-background.log" 2>&1 &)
    python -m pip install -q -r "$ROOT/requirements-dev.txt"
fi

# Without nvcc a build stops (setup.py): here, say so and test without the extension.
nvcc_found="$(python -c "import sys; sys.path.insert(0, sys.argv[1]); import csrc_build
print(int(csrc_build.find_nvcc() is not None))" "$ROOT")"
if [ -z "${FUSEDRNN_SKIP_CUDA_BUILD:-}" ] && [ "$nvcc_found" = 0 ]; then
    echo "setup_env: nvcc not found: building and testing without the CUDA extension (FUSEDRNN_SKIP_CUDA_BUILD=1)" >&2
    export FUSEDRNN_SKIP_CUDA_BUILD=1
fi

# What the extension is built from: a change here (or in the build settings) rebuilds it.
csrc_stamp() {
    (cd "$ROOT" && { find csrc -type f -print0 | LC_ALL=C sort -z | xargs -0 sha1sum; sha1sum csrc_build.py
                     echo "archs=${FUSEDRNN_CUDA_ARCHS:-} skip=${FUSEDRNN_SKIP_CUDA_BUILD:-} O0=${unoptimised_ptx}"
                   } | sha1sum | cut -d' ' -f1)
}
built_stamp="$ROOT/build/fusedrnn_C.stamp"
extension_is_current() {
    [ -n "${FUSEDRNN_SKIP_CUDA_BUILD:-}" ] && return 0
    compgen -G "$ROOT/fusedrnn/_C*.so" >/dev/null && [ -f "$built_stamp" ] && [ "$(cat "$built_stamp")" = "$(csrc_stamp)" ]
}
record_build() { mkdir -p "$ROOT/build" && csrc_stamp > "$built_stamp"; }

# Without a GPU nothing runs the extension's device code: the behaviour tests call its host code
# (the plans, the argument checks), and only the compile gates read its sm_90 machine code. So
# there it is built for sm_90 only, and as unoptimised PTX alone ("90-virtual" without ptxas,
# FUSEDRNN_UNOPTIMISED_PTX=1 without cicc's optimiser: rnn_tanh.cu in 5 s of CPU, not 42)
# unless the caller reads machine code (FUSEDRNN_NEEDS_SASS=1: `test.sh --gates`) or a build
# with sm_90 machine code is current (it holds what the PTX build would).
no_gpu_archs=""
unoptimised_ptx="${FUSEDRNN_UNOPTIMISED_PTX:-}"
if [ -z "${FUSEDRNN_CUDA_ARCHS+set}" ] && ! nvidia-smi -L >/dev/null 2>&1; then
    export FUSEDRNN_CUDA_ARCHS=90
    no_gpu_archs=" for sm_90 only: no NVIDIA GPU here (FUSEDRNN_CUDA_ARCHS chooses)"
    if [ -z "${FUSEDRNN_NEEDS_SASS:-}" ] && ! extension_is_current; then
        export FUSEDRNN_CUDA_ARCHS=90-virtual
        unoptimised_ptx=1  # given to the build commands only: the tests build other archs with the same env
        no_gpu_archs=" as unoptimised sm_90 PTX only: no NVIDIA GPU here (FUSEDRNN_CUDA_ARCHS chooses; \`test.sh --gates\` adds the machine code)"
    fi
fi

if [ "$fresh" = 1 ]; then
    echo "setup_env: installing fusedrnn in editable mode (compiling fusedrnn._C$no_gpu_archs takes minutes)" >&2
    FUSEDRNN_UNOPTIMISED_PTX="$unoptimised_ptx" python -m pip install -q --no-build-isolation -e "$ROOT"
    python -m pip check
    record_build
    echo "$want" > "$stamp"
elif ! extension_is_current; then
    echo "setup_env: csrc/, csrc_build.py or FUSEDRNN_CUDA_ARCHS changed since the last build: rebuilding fusedrnn._C$no_gpu_archs" >&2
    (cd "$ROOT" && FUSEDRNN_UNOPTIMISED_PTX="$unoptimised_ptx" python setup.py -q build_ext --inplace >/dev/null)
    record_build
fi
