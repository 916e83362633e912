#!/usr/bin/env bash
# Set up (idempotent), lint, and run the whole test suite on the CPU, one pytest-xdist worker
# per core (each test process computes with one thread, tests/conftest.py; a module's tests
# stay on one worker, so a module-scoped fixture runs once).
# Arguments go to pytest, e.g. ./run_tests.sh -m "not slow" (the quick inner loop: no door runs).
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -n auto --dist loadscope "$@"
