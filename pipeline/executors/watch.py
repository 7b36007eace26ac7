"""Watching recorded jobs: every job of a command in one live query and one accounting query per
backend, whatever the number of stages and variants (schedulers ban tools that poll per job)."""
from __future__ import annotations

import sys

from pipeline import executors
from pipeline.core import state
from pipeline.executors.base import LiveJob


def live_jobs(records: dict[str, list[str]]) -> dict[str, LiveJob]:
    """Executor name -> job ids  =>  the ones still queued or running, one query per backend."""
    live: dict[str, LiveJob] = {}
    for name, ids in records.items():
        if ids:
            live.update(executors.backend(name).live(ids))
    return live


def usages(requests: dict) -> tuple[dict, str | None]:
    """Key -> (executor name, request)  =>  key -> usage summary (None where there is none), one
    accounting query per backend that queues jobs (a request whose backend was not recorded asks
    each of them: only their own job ids match); and why the accounting is missing (None when a
    scheduler answered)."""
    by_backend: dict[str, list] = {}
    for key, (name, _) in requests.items():
        for backend in _asked_about(name):
            by_backend.setdefault(backend, []).append(key)
    out: dict = dict.fromkeys(requests)
    whys = []
    for name, keys in by_backend.items():
        answers, why = executors.backend(name).accounting([requests[k][1] for k in keys])
        out.update({k: a for k, a in zip(keys, answers) if a is not None})
        whys.append(why)
    if not by_backend:
        return out, f"no {schedulers()} job ids recorded (stages ran locally)"
    why = None if None in whys else whys[0]
    if why and why not in _SAID:      # said once per command, on stderr, besides report.md's note
        _SAID.add(why)
        print(f"[pipeline] warning: no accounting from the scheduler: {why}", file=sys.stderr, flush=True)
    return out, why


_SAID: set[str] = set()


def _asked_about(name: str | None) -> list[str]:
    """The backends to ask about a record's jobs: its own if it queues jobs; every one that
    queues jobs when no backend was recorded; none for a backend that runs stages at once."""
    queueing = [n for n, c in executors.BACKENDS.items() if c.queues_jobs]
    return queueing if name is None else [name] if name in queueing else []


def schedulers() -> str:
    """How messages name the backends that queue jobs (their `title`)."""
    return "/".join(c.title for c in executors.BACKENDS.values() if c.queues_jobs)


def job_ids_by_backend(stage_dirs) -> dict[str, list[str]]:
    """Executor name -> every job id these stage folders ever had under it (their job.json; each
    job under the backend that ran it)."""
    out: dict[str, list[str]] = {}
    for folder in stage_dirs:
        for job, name in state.job_executors(folder).items():
            out.setdefault(name or "local", []).append(job)
    return out
