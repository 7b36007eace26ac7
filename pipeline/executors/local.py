"""Local backend: each stage in a child process, one after another, logs under logs/."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import yaml

from pipeline.core.config import Experiment
from safeio import atomic_write_text
from pipeline.executors.base import Executor, Submission


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, dry_run: bool = False):
        super().__init__(dry_run)
        self.states: dict[str, str] = {}   # job id -> done | failed | never-run
        self.written: dict = {}            # resolved config files already written by this submit

    def check(self, exp: Experiment, stages: list[str]) -> list[str]:
        return [f"stages.{name}.resources: nodes x tasks = {exp.stages[name].resources.world_size} processes, "
                f"which only srun starts; submit with --executor slurm, or set tasks: 1 and nodes: 1 to run here"
                for name in stages if exp.stages[name].resources.world_size > 1]

    @staticmethod
    def _resolved(exp: Experiment):
        """The resolved config the child reads: one per experiment, and one per variant."""
        folder = exp.results_dir / "variants" / exp.variant if exp.variant else exp.results_dir
        return folder / "_resolved.yaml"

    def _command(self, exp: Experiment, stage: str) -> list[str]:
        return [sys.executable, "-m", "pipeline", "run", stage, "-c", str(self._resolved(exp))]

    def submit(self, exp: Experiment, stage: str, after: list[str], dependency: str | None = None) -> Submission:
        job_id = f"local-{os.getpid()}-{stage}" + (f"-{exp.variant}" if exp.variant else "")
        log = exp.log_dir(stage) / f"{time.strftime('%Y%m%d-%H%M%S')}.log"
        if any(self.states.get(j) != "done" for j in after):
            self.states[job_id] = "never-run"
            return Submission(stage, job_id, log, "never-run")
        resolved = self._resolved(exp)
        if not self.written.get(resolved):   # once per submit, not once per stage
            atomic_write_text(resolved, yaml.safe_dump(exp.raw, sort_keys=False))
            self.written[resolved] = True
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[pipeline] running {stage} locally (log: {log})", flush=True)
        with open(log, "w") as f:
            code = subprocess.call(self._command(exp, stage), stdout=f, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PIPELINE_JOB_ID": job_id})
        self.states[job_id] = "done" if code == 0 else "failed"
        return Submission(stage, job_id, log, self.states[job_id])

    def script(self, exp: Experiment, stage: str, after: list[str], dependency: str | None = None, tasks: int = 0,
               limit: int = 0) -> str:
        import shlex
        return " ".join(shlex.quote(a) for a in self._command(exp, stage))
