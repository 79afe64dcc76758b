#!/usr/bin/env bash
# The one prepared run for the lent GPU machine (see benchmarks/README.md):
#   OUT=<folder> bash benchmarks/device_check.sh [--rehearse] [--deadline 540] [--help]
# env -> load (prebuilt) -> calibrate -> smoke -> tests (+ compute-sanitizer) -> bench -> triage,
# each stage under min(its cap, the time left). $OUT gets summary.md, junit.xml,
# results-<dtype>.json, device_check.log and artifacts.tar.gz. The work is done by
# `python -m tools.device_check`; PYTHON picks the interpreter (default: the
# repository's .venv if there is one, else python3).
set -u
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
export PYTHONUNBUFFERED=1
exec "$PY" -m tools.device_check "$@"
