#!/usr/bin/env bash
# Set up, then run the default experiment (configs/quickstart.yaml) end to end:
# on SLURM when a controller answers, else locally. Extra arguments go to `pipeline submit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python -m pipeline submit all --wait "$@"
