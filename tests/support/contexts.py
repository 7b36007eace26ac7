"""What the engine hands a stage (`StageContext`) and the loop (`FitEnv`), made for a test that
calls a stage or `fit` in its own process."""
from __future__ import annotations

import logging
from pathlib import Path

from jobs.training.params import FitEnv
from pipeline.contract import StageContext


def stage_context(root: Path, stage: str, upstream: list[str] | dict[str, Path] = (), seed: int = 0,
                  **fields) -> StageContext:
    """Stage `stage` of experiment "t" with its folder at root/results/<stage>; `upstream` names
    stages under root/results (or maps names to folders); data and cache folders under root."""
    out = root / "results" / stage
    out.mkdir(parents=True, exist_ok=True)
    folders = upstream if isinstance(upstream, dict) else {u: root / "results" / u for u in upstream}
    return StageContext(experiment="t", stage=stage, out_dir=out, upstream=dict(folders), data_dir=root / "data",
                        cache_dir=root / "cache", seed=seed, device="cpu", log=logging.getLogger(f"test.{stage}"),
                        accounting={}, **fields)


class Interrupted(Exception):
    """Raised by LogLines where a job would have been killed."""


class LogLines:
    """A logger that keeps its lines; with `stop_after`, raises Interrupted once that epoch's line
    is logged (the loop logs it after the epoch's checkpoint is on disk, as a job killed there
    would be)."""

    def __init__(self, stop_after: int = 0):
        self.lines, self.stop_after = [], stop_after

    def info(self, msg, *args):
        self.lines.append(msg % args)
        if self.stop_after and self.lines[-1].startswith(f"Epoch {self.stop_after}/"):
            raise Interrupted

    warning = info


def fit_env(out_dir: Path, log=None, seed: int = 0, rank: int = 0, world_size: int = 1) -> FitEnv:
    """Where fit runs: out_dir, on the CPU, one process unless `world_size` says otherwise."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return FitEnv(out_dir, out_dir / "checkpoint.pt", log or LogLines(), seed, "cpu", "test",
                  rank=rank, world_size=world_size)
