#!/usr/bin/env bash
# Set up, start the local SLURM cluster when possible (root + apt), run the test suite.
# With CI=true the SLURM tests must run: a cluster that cannot start fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if ! bash scripts/slurm_cluster.sh up; then
    if [ "${CI:-}" = true ]; then echo "SLURM cluster failed to start; CI needs it" >&2; exit 1; fi
    echo "SLURM cluster failed to start: the SLURM tests will be skipped" >&2
  fi
  # the report's browser test (headless Chromium); ~15 s the first time, nothing after
  if ! bash scripts/browser.sh install; then
    if [ "${CI:-}" = true ]; then echo "chromium failed to install; CI needs it" >&2; exit 1; fi
    echo "chromium failed to install: the browser test will be skipped" >&2
  fi
fi
# Two workers (tests/conftest.py): the SLURM tests one after another on one, the rest on the other.
# One compute thread per process: the two workers and the cluster's jobs share 2 cores, and torch's
# default (a thread per core in every process) made them spin against each other (a 7 s test took
# 95 s). Jobs still run a thread per CPU they asked for (the setup lines of configs/defaults.yaml).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -q -ra -n 2 --dist loadgroup --no-loadscope-reorder "$@"
