#!/usr/bin/env bash
# Set up everything the tests need and run the whole suite: linters, layer contracts, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/apt.sh
bash scripts/setup.sh test
.venv/bin/ruff check src tests scripts bench
.venv/bin/mypy
.venv/bin/lint-imports
# pytest exits 5 when it collects nothing; set -e makes that a failure too.
.venv/bin/pytest -q "$@"
