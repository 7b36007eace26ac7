"""The executor interface shared by the SLURM and local backends."""
from __future__ import annotations

import abc
import dataclasses
from pathlib import Path


class SubmitError(RuntimeError):
    """A stage could not be submitted (e.g. sbatch refused it); the message is one line."""


@dataclasses.dataclass
class Submission:
    stage: str
    job_id: str
    log: Path
    state: str          # slurm: "submitted"; local: "done" | "failed" | "never-run"


class Executor(abc.ABC):
    name: str = "executor"

    def __init__(self, dry_run: bool = False):
        self.dry_run = dry_run

    @abc.abstractmethod
    def submit(self, exp, stage: str, after: list[str], dependency: str | None = None) -> Submission:
        """Start `stage` once every job id in `after` has succeeded (or as `dependency`, a SLURM
        --dependency string, says)."""

    def submit_array(self, exps: list, stage: str, dependency: str | None, limit: int = 0) -> list[Submission]:
        """The same stage of several variants as one job array; an executor without arrays (local)
        submits them one by one."""
        return [self.submit(exp, stage, [], dependency) for exp in exps]

    def check(self, exp, stages: list[str]) -> list[str]:
        """Problems that would keep these stages from ever running here (checked before submitting)."""
        return []

    def script(self, exp, stage: str, after: list[str], dependency: str | None = None, tasks: int = 0,
               limit: int = 0) -> str:
        """The text that would be submitted for `stage` (for --dry-run)."""
        return ""

    def cancel(self, job_ids: list[str]) -> None:
        """Cancel jobs this executor submitted (a submit that failed halfway takes its jobs back).
        Local runs are over when submit returns: nothing to cancel."""
