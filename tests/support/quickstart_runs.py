"""Local runs of configs/quickstart.yaml that several test modules read, each made once per test
session (a module-level cache: a fixture imported into two modules would run twice).

`finished(tmp_path_factory)`: one finished `submit all --executor local`. It is never used in
place: `private_copy` gives a module its own results and logs (what tests write to), on the
shared data and cache folders (the data folder is part of every fingerprint, so a copy of the
results is done there as it is in the original).

`interrupted_and_resumed(tmp_path_factory)`: on a copy of the finished run, training at
RESUMED_EPOCHS epochs without early stop, sent SIGTERM once epoch 3 is logged, then run again to the end; what
the first attempt left and both attempts' output, for tests/experiments/test_quickstart.py (resume of
the epochs) and tests/experiments/test_reliability.py (accounting of the two attempts)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.cli import REPO, cli, sets, terminate_at

CONFIG = "configs/quickstart.yaml"
# Enough epochs that the SIGTERM after epoch 3 lands well before the end (an epoch takes ~1 s here).
RESUMED_EPOCHS = 12
_RUNS: dict[str, object] = {}


def finished(tmp_path_factory) -> Path:
    """The root (results, logs, data, cache) of the session's finished quickstart run."""
    if "finished" not in _RUNS:
        root = tmp_path_factory.mktemp("quickstart_finished")
        cli("submit", "all", "-c", CONFIG, "--executor", "local", *sets(overrides_for(root)))
        _RUNS["finished"] = root
    return _RUNS["finished"]


def overrides_for(root: Path, data_root: Path | None = None) -> list[str]:
    """results and logs under root; data and cache under data_root (default: root too)."""
    data_root = data_root or root
    return [f"paths.results={root / 'results'}", f"paths.logs={root / 'logs'}",
            f"paths.data={data_root / 'data'}", f"paths.cache={data_root / 'cache'}"]


def private_copy(tmp_path_factory, name: str) -> dict:
    """A copy of the finished run's results and logs under a new folder; data and cache shared."""
    shared = finished(tmp_path_factory)
    root = tmp_path_factory.mktemp(name)
    for k in ("results", "logs"):
        shutil.copytree(shared / k, root / k, symlinks=True)
    return {"root": root, "data": shared / "data", "overrides": overrides_for(root, shared)}


def interrupted_and_resumed(tmp_path_factory) -> dict:
    if "resumed" not in _RUNS:
        run = private_copy(tmp_path_factory, "quickstart_resumed")
        overrides = run["overrides"] + [f"stages.train.epochs={RESUMED_EPOCHS}", "stages.train.patience=0"]
        cmd = [sys.executable, "-m", "pipeline", "run", "train", "-c", CONFIG, *sets(overrides)]
        returncode, rest = terminate_at(cmd, f"Epoch 3/{RESUMED_EPOCHS}")
        train = run["root"] / "results" / "quickstart" / "train"
        first = {"returncode": returncode, "rest": rest, "success": (train / "_SUCCESS").exists(),
                 "accounting": json.loads((train / "accounting.json").read_text())}
        rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        _RUNS["resumed"] = {"train": train, "first": first, "rerun": rerun}
    return _RUNS["resumed"]
