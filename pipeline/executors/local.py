"""Local backend: each stage in a child process, one after another, logs under logs/."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

import yaml

from pipeline.core.paths import resolved_config
from pipeline.executors.base import After, Executor, Submission
from safeio import atomic_write_text


class LocalExecutor(Executor):
    name = "local"
    title = "local"

    def __init__(self, dry_run: bool = False, entry=None):
        super().__init__(dry_run, entry)
        self.states: dict[str, str] = {}   # job id -> done | failed | never-run
        self.written: set = set()          # resolved config files already written by this submit

    def check(self, exp, stages: list[str]) -> list[str]:
        return [f"stages.{name}.resources: nodes x tasks = {exp.stages[name].resources.world_size} processes, "
                f"which only srun starts; submit with --executor slurm, or set tasks: 1 and nodes: 1 to run here"
                for name in stages if exp.stages[name].resources.world_size > 1]

    @staticmethod
    def _resolved(exp):
        """The resolved config the child reads: one per experiment, and one per variant."""
        return resolved_config(exp.paths.results, exp.name, exp.variant)

    def _command(self, exp, stage: str) -> list[str]:
        return [sys.executable, "-m", "pipeline", "run", stage, "-c", str(self._resolved(exp))]

    def submit(self, exp, stage: str, after: After = After()) -> Submission:
        """Runs the stage now, when every `after.ok` job is done (`any` and `each` have ended
        already: local runs are over when submit returns)."""
        job_id = f"local-{os.getpid()}-{stage}" + (f"-{exp.variant}" if exp.variant else "")
        log = exp.log_dir(stage) / f"{time.strftime('%Y%m%d-%H%M%S')}.log"
        if any(self.states.get(j) != "done" for j in (*after.ok, *after.each)):
            self.states[job_id] = "never-run"
            return Submission(stage, job_id, log, "never-run")
        resolved = self._resolved(exp)
        if resolved not in self.written:   # once per submit, not once per stage
            atomic_write_text(resolved, yaml.safe_dump(exp.raw, sort_keys=False))
            self.written.add(resolved)
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[pipeline] running {stage} locally (log: {log})", flush=True)
        with open(log, "w") as f:
            code = subprocess.call(self._command(exp, stage), stdout=f, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PIPELINE_JOB_ID": job_id})
        self.states[job_id] = "done" if code == 0 else "failed"
        return Submission(stage, job_id, log, self.states[job_id])

    def script(self, exp, stage: str, after: After = After(), tasks: int = 0, limit: int = 0) -> str:
        return shlex.join(self._command(exp, stage))
