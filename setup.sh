#!/usr/bin/env bash
# Idempotent setup: a virtualenv in .venv with this repository installed (editable).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# torch/torchvision first, pinned to the releases this project is tested with. --no-compile:
# pip would byte-compile every module of torch and tensorflow (~40 s for torch alone here);
# Python compiles, and caches, only the modules a run imports.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
    .venv/bin/pip install --disable-pip-version-check -q --no-compile "torch==2.14.1" \
        "torchvision==0.29.1" \
        || .venv/bin/pip install --disable-pip-version-check -q --no-compile torch torchvision
fi
.venv/bin/pip install --disable-pip-version-check -q --no-compile -e ".[test]"
