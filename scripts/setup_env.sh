#!/usr/bin/env bash
# Create .venv and install the project into it. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv

# uv installs the same wheels as pip, several times faster (parallel downloads and installs):
# measured here for a fresh venv, torch and the project's packages took ~20 s with uv and ~90 s
# with pip. pip stays the fallback wherever uv cannot be had or fails.
install() {
  if [ -x .venv/bin/uv ] || .venv/bin/pip install -q uv >/dev/null 2>&1; then
    if .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python "$@"; then
      return 0
    fi
    echo "setup_env: uv could not install $*; trying pip" >&2
  fi
  .venv/bin/pip install -q "$@"
}

# torch/torchvision pinned to the builds this kind of machine has (CUDA-enabled wheels);
# pyproject.toml itself only asks for torch>=2.3 so clusters can use their own build.
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  install "torch==2.14.1" "torchvision==0.29.1"
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  install -e ".[test,deploy,search,gpu]"
  touch "$stamp"
fi
