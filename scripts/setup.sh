#!/usr/bin/env bash
# Create .venv and install safehold into it (with the test tools when called with "test").
# Idempotent: a second run only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extra=""
[ "${1:-}" = "test" ] && extra="[test]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=23"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extra}"
# Byte-code for the editable source, as a wheel install has it: where the environment sets
# PYTHONDONTWRITEBYTECODE, every command would otherwise compile safehold's modules again (about 45 ms).
.venv/bin/python -m compileall -q src >/dev/null
