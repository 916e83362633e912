#!/usr/bin/env bash
# Idempotent setup: a virtualenv in .venv with this repository installed (editable).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# torch/torchvision first, pinned to the releases this project is tested with.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
    .venv/bin/pip install --disable-pip-version-check -q "torch==2.14.1" "torchvision==0.29.1" \
        || .venv/bin/pip install --disable-pip-version-check -q torch torchvision
fi
.venv/bin/pip install --disable-pip-version-check -q -e ".[test]"
