"""SLURM backend through submitit: one job per stage, chained with --dependency=afterok."""
from __future__ import annotations

import os
from pathlib import Path

import submitit

from ..config import Experiment, time_minutes
from .base import Executor, Submission


class StageJob(submitit.helpers.Checkpointable):
    """The callable each SLURM job runs. Checkpointable: on the time-limit signal or preemption,
    submitit requeues the job, and the stage resumes from its own checkpoint."""

    def __call__(self, resolved: dict, stage: str) -> dict:
        from ..config import from_raw
        from ..runner import run_stage
        return run_stage(from_raw(resolved), stage, job_id=os.environ.get("SLURM_JOB_ID"))


class SlurmExecutor(Executor):
    name = "slurm"

    def _executor(self, exp: Experiment, stage: str, after: list[str]) -> submitit.SlurmExecutor:
        s = exp.stages[stage]
        r = s.resources
        ex = submitit.SlurmExecutor(folder=exp.log_dir(stage), max_num_timeout=3)
        params = dict(job_name=f"{exp.name}.{stage}", time=time_minutes(r.time), cpus_per_task=r.cpus_per_task,
                      mem=r.mem, setup=[f"cd {_quote(os.getcwd())}", *exp.setup, *s.setup],
                      signal_delay_s=exp.signal_delay_s, stderr_to_stdout=True,
                      additional_parameters=dict(r.extra))
        optional = dict(partition=r.partition, constraint=r.constraint, account=r.account, qos=r.qos,
                        gpus_per_node=r.gpus or None, dependency=_afterok(after))
        params.update({k: v for k, v in optional.items() if v is not None})
        ex.update_parameters(**params)
        return ex

    def submit(self, exp: Experiment, stage: str, after: list[str]) -> Submission:
        exp.log_dir(stage).mkdir(parents=True, exist_ok=True)
        job = self._executor(exp, stage, after).submit(StageJob(), exp.raw, stage)
        return Submission(stage, str(job.job_id), Path(job.paths.stdout), "submitted")

    def script(self, exp: Experiment, stage: str, after: list[str]) -> str:
        ex = self._executor(exp, stage, after)
        # submitit's own renderer: exactly the text `submit` hands to sbatch (minus real job ids).
        return ex._make_submission_file_text(ex._submitit_command_str, "dry-run")


def _afterok(job_ids: list[str]) -> str | None:
    return "afterok:" + ":".join(job_ids) if job_ids else None


def _quote(text: str) -> str:
    import shlex
    return shlex.quote(text)
