"""Executors: one interface (base.py), one module per backend, registered here by name.

Everything the engine needs from a batch system goes through this package: making an executor,
watching recorded jobs (`backend(name)`), the job a process runs in, the rendezvous of a
several-process stage, the time-limit signal, the one-allocation batch script and its steps. A
new backend is one module plus one line in BACKENDS.
"""
from __future__ import annotations

import os
from typing import Callable

from pipeline.executors.base import (After, Executor, JobEnvironment, LiveJob, SchedulerUnavailable, Submission,
                                     SubmitError, UsageRequest)
from pipeline.executors.local import LocalExecutor
from pipeline.executors.slurm import env as batch_env, formats as batch_formats, render as batch_render
from pipeline.executors.slurm import steps as batch_steps
from pipeline.executors.slurm.executor import SlurmExecutor

# name -> backend. `auto` picks the first that queues jobs and is reachable here, else local.
BACKENDS: dict[str, type[Executor]] = {"slurm": SlurmExecutor, "local": LocalExecutor}


def backend_class(name: str) -> type[Executor]:
    if name not in BACKENDS:
        raise ValueError(f"unknown executor {name!r}; valid choices: auto, {', '.join(BACKENDS)}")
    return BACKENDS[name]


def make_executor(choice: str, dry_run: bool = False, entry: Callable[[dict, str], dict] | None = None) -> Executor:
    """auto|<backend>. auto picks the first queueing backend that is reachable, else local with a
    printed notice. `entry(resolved config, stage)` is what a queued job runs (the runner's)."""
    if choice == "auto":
        queueing = [n for n in BACKENDS if backend_class(n).queues_jobs]
        reasons = {n: BACKENDS[n].reachable() for n in queueing}
        choice = next((n for n, (ok, _) in reasons.items() if ok), "local")
        if choice == "local":
            for n, (_, why) in reasons.items():
                print(f"[pipeline] {BACKENDS[n].title} not reachable ({why}): running locally in this process's machine.")
    return backend_class(choice)(dry_run=dry_run, entry=entry)


def backend(name: str | None) -> Executor:
    """The backend that submitted a recorded job (job.json `executor`), to watch it."""
    return backend_class(name if name in BACKENDS else "local")()


def check_request(resources, key: str) -> None:
    """Refuse at config load what the batch backend would read wrongly (its formats, its options)."""
    batch_formats.check_request(resources, key)


def request_seconds(time: str) -> int:
    """A stage's `resources.time` (the batch backend's forms) -> seconds."""
    return batch_formats.time_seconds(time)


def request_mem_mb(mem: str) -> float:
    """A stage's `resources.mem` (the batch backend's forms) -> MiB."""
    return batch_formats.mem_mb(mem)


def job_environment() -> JobEnvironment:
    """The job this process runs in: the batch system's, else what the local executor set."""
    env = batch_env.job_environment()
    return env or JobEnvironment(job_id=os.environ.get("PIPELINE_JOB_ID"))


def rendezvous_env(world_size: int) -> dict[str, str]:
    """env:// rendezvous variables (MASTER_ADDR, RANK, ...) of this process in a several-process stage."""
    return batch_env.rendezvous_env(world_size)


def install_signal_handlers() -> None:
    """The batch system's warning before the time limit: stop the stage or requeue the job."""
    batch_steps.install_usr1_handler()


def run_as_steps(exp, targets: list[str], config_arg: str, overrides: list[str], force: bool,
                 plan: Callable, run_here: Callable) -> int:
    """Inside a one-allocation job, each stage as its own job step; elsewhere `run_here`."""
    return batch_steps.run_as_steps(exp, targets, config_arg, overrides, force, plan, run_here)


def render_batch_script(exp, config_arg: str, overrides: list[str]) -> tuple[str, str]:
    """(default path, text) of the one-allocation batch script of an experiment."""
    return batch_render.default_path(exp), batch_render.render(exp, config_arg, overrides)


__all__ = ["After", "Executor", "JobEnvironment", "LiveJob", "SchedulerUnavailable", "Submission", "SubmitError",
           "UsageRequest",
           "backend", "make_executor", "job_environment", "rendezvous_env", "check_request",
           "install_signal_handlers", "run_as_steps", "render_batch_script"]
