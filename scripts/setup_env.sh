#!/usr/bin/env bash
# Create .venv and install the project into it. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch/torchvision pinned to the builds this kind of machine has on disk (CUDA-enabled wheels);
# pyproject.toml itself only asks for torch>=2.3 so clusters can use their own build.
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q -e ".[test,deploy,search]"
  touch "$stamp"
fi
