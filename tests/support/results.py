"""Reading back what a run wrote: CSV tables, a stage's JSON files, the efficiency table."""
from __future__ import annotations

import csv
import json
from pathlib import Path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def stage_json(experiment_results: Path, stage: str, name: str = "metrics.json"):
    """results/<experiment>/<stage>/<name>, parsed."""
    return json.loads((Path(experiment_results) / stage / name).read_text())


def efficiency(results: Path, experiment: str | None = None) -> dict[str, dict]:
    """stage -> its row of results/efficiency.csv (of `experiment` only, when given)."""
    return {r["stage"]: r for r in read_csv(Path(results) / "efficiency.csv")
            if experiment is None or r["experiment"] == experiment}
