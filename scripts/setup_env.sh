# Sourced by scripts/test.sh and scripts/bench.sh: a project-local virtual environment
# with the pinned packages and fusedrnn installed in editable mode (CUDA extension
# built when nvcc is present). Idempotent: reinstalls only when the pins change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FUSEDRNN_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
stamp="$VENV/.fusedrnn-installed"
want="$(cat "$ROOT/requirements-dev.txt" "$ROOT/setup.py" | sha1sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    python -m pip install -q --upgrade pip >/dev/null
    python -m pip install -q -r "$ROOT/requirements-dev.txt"
    python -m pip install -q --no-build-isolation -e "$ROOT"
    echo "$want" > "$stamp"
else
    # sources may have changed since the last build: rebuild the extension in place (fast when unchanged)
    (cd "$ROOT" && python setup.py -q build_ext --inplace >/dev/null)
fi
