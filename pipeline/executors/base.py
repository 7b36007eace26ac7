"""The executor interface: what the engine asks of a backend (submit, watch, account, cancel),
and the plain records a backend answers with. Nothing here knows any scheduler.

A backend is one module with an `Executor` subclass, registered by one line in
pipeline/executors/__init__.py. `submit`, `status`, `reconcile`, `report` and the runner talk to
this interface only.
"""
from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Callable


class SubmitError(RuntimeError):
    """A stage could not be submitted (e.g. the scheduler refused it); the message is one line."""


class SchedulerUnavailable(RuntimeError):
    """The scheduler does not answer, so nothing could be looked at or changed; the message is one
    line saying so and what to check. Never read as "no jobs": a command that could not look
    says it could not."""


@dataclasses.dataclass
class Submission:
    stage: str
    job_id: str
    log: Path
    state: str          # "submitted" (a queued job) or, for backends that run at once: "done" | "failed" | "never-run"


@dataclasses.dataclass(frozen=True)
class After:
    """What a job waits for: `ok` jobs to succeed; `each` job arrays task by task (task i of this
    array after task i of that one); `any` jobs to end, however they end."""
    ok: tuple[str, ...] = ()
    each: tuple[str, ...] = ()
    any: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ok or self.each or self.any)


@dataclasses.dataclass(frozen=True)
class LiveJob:
    """A job still in the queue or running, as the scheduler sees it now."""
    state: str                   # "pending" | "running"
    reason: str                  # the scheduler's own words (why it waits, or its running state)
    on_dependency: bool = False  # pending until other jobs end
    never_starts: bool = False   # pending on a dependency that can never be satisfied
    waits_on: tuple[str, ...] = ()   # the jobs (or arrays) of its dependencies not yet fulfilled


@dataclasses.dataclass(frozen=True)
class UsageRequest:
    """One stage's jobs, for `Executor.accounting`: every job that ran an attempt of it, how to find
    the stage inside a job that ran several stages (its step name or recorded step id), and the
    stage's current job (whose own state is answered as `current`)."""
    job_ids: tuple[str, ...]
    step_name: str | None = None
    step_id: str | None = None
    current: str | None = None


@dataclasses.dataclass(frozen=True)
class JobEnvironment:
    """What the batch system tells a process about the job it runs in (all None outside one)."""
    job_id: str | None = None        # as accounting names it (an array task: `<array>_<task>`)
    step_id: str | None = None       # the job step that runs this stage, in a one-allocation job
    node: str | None = None
    partition: str | None = None
    cpus: int | None = None          # CPUs given to this task
    task: int = 0                    # job-array task index and count (0 of 1 outside an array)
    tasks: int = 1
    array_id: str | None = None      # the array's own id (what the stage records), and every task's
    task_ids: tuple[str, ...] = ()   # id as accounting names them
    executor: str = "local"          # the backend that started it


class Executor(abc.ABC):
    name: str = "executor"
    title: str = "executor"          # how messages name it
    queues_jobs: bool = False        # jobs outlive `submit` (watch them with live/accounting)
    runs_arrays: bool = False        # several runs of one stage can be one job array

    def __init__(self, dry_run: bool = False, entry: Callable[[dict, str], dict] | None = None):
        """`entry(resolved_config, stage)`: what a queued job calls to run the stage (the runner's)."""
        self.dry_run, self.entry = dry_run, entry

    @classmethod
    def reachable(cls) -> tuple[bool, str]:
        """(usable, why): whether this backend can take jobs from here."""
        return True, "runs here"

    @abc.abstractmethod
    def submit(self, exp, stage: str, after: After = After()) -> Submission:
        """Start `stage` once `after` allows."""

    def submit_array(self, exps: list, stage: str, after: After, limit: int = 0) -> list[Submission]:
        """The same stage of several variants as one job array; a backend without arrays submits
        them one by one."""
        return [self.submit(exp, stage, after) for exp in exps]

    def check(self, exp, stages: list[str]) -> list[str]:
        """Problems that would keep these stages from ever running here (checked before submitting)."""
        return []

    def script(self, exp, stage: str, after: After = After(), tasks: int = 0, limit: int = 0) -> str:
        """The text that would be submitted for `stage` (for --dry-run)."""
        return ""

    def cancel(self, job_ids: list[str]) -> None:
        """Cancel jobs this backend submitted (a submit that failed halfway takes its jobs back).
        Jobs that run at once are over when submit returns: nothing to cancel."""

    def live(self, job_ids: list[str]) -> dict[str, LiveJob]:
        """Which of these jobs are queued or running now, in one scheduler query."""
        return {}

    def accounting(self, requests: list[UsageRequest]) -> tuple[list[dict | None], str | None]:
        """What each stage's jobs used, every attempt summed, in one scheduler query:
        ([summary or None per request], why there is no accounting or None). A summary has
        state, ended, failed, attempts, elapsed_s, totalcpu_s, core_s, alloc_cpus, node,
        partition, maxrss_task_mb, maxrss_step_mb (pipeline/accounting/record.py reads it), and
        `current`: {state, failed, live ("pending" | "running" | None), said} of the current job."""
        return [None] * len(requests), f"no scheduler accounting ({self.name} runs stages as plain processes)"

    def array_task(self, job_id: str) -> tuple[str, int] | None:
        """(array id, task index) when `job_id` names a task of a job array, else None."""
        return None

    def dry_run_task_id(self, array: str, task: int) -> str:
        """How a dry run names task `task` of an array not submitted yet (array_task reads it back)."""
        return f"{array}#{task}"

    def describe(self, after: After) -> str:
        """`after` in the backend's own words (dry runs show it)."""
        return ", ".join(f"{kind}: {' '.join(ids)}" for kind, ids in vars(after).items() if ids)

    def array_id(self, job_id: str) -> str:
        """The id of the array a task belongs to (what a dependency waits on); else the id itself."""
        task = self.array_task(job_id)
        return task[0] if task else job_id
