"""The state of every stage, from files on disk plus what the executors that ran them say now
(one live query and one accounting query per backend, whatever the number of stages); and
`reconcile`."""
from __future__ import annotations

import dataclasses

import safeio
from pipeline import contract, executors
from pipeline.core import progress, state
from pipeline.core.config import Experiment
from pipeline.core.dag import topological_order
from pipeline.core.fingerprint import fingerprints
from pipeline.executors import LiveJob, UsageRequest
from pipeline.executors.watch import job_ids_by_backend, live_jobs, usages


# States of a stage that ended without its result (the stages after it cannot run).
NOT_SUCCEEDED = ("failed", "interrupted", "never-run")
_RESUMES = "stopped before it finished (scancel, time limit or preemption); the next submit resumes it"


def stage_states(exp: Experiment) -> list[dict]:
    """One row per stage: stage, state, job_id, elapsed_s, log, reason, progress (a running stage's
    latest progress.json, pipeline/core/progress.py; else None)."""
    return states_of([exp])[0]


@dataclasses.dataclass
class Snapshot:
    """What the scheduler says now about every job of some experiments: one live query and one
    accounting query per backend, taken once and read by every experiment's rows (a sweep of 1,000
    variants costs the scheduler what a plain run does)."""
    live: dict[str, LiveJob]
    used: dict


def take_snapshot(exps: list[Experiment]) -> Snapshot:
    folders = dict.fromkeys(e.stage_dir(n) for e in exps for n in e.stages)
    live = live_jobs(job_ids_by_backend(folders))
    requests = {}
    for i, exp in enumerate(exps):
        for n in exp.stages:
            rec = state.job_record(exp.stage_dir(n))
            if rec.get("job_id"):
                acct = safeio.read_json(exp.stage_paths(n).accounting, {}) or {}
                requests[(i, n)] = (state.recorded_executor(exp.stage_dir(n)), _usage_request(exp, n, rec, acct))
    used, _ = usages(requests)
    return Snapshot(live, used)


def states_of(exps: list[Experiment], snapshot: Snapshot | None = None) -> list[list[dict]]:
    """stage_states of each experiment (plain run, variants), from one snapshot of the scheduler."""
    snapshot = snapshot or take_snapshot(exps)
    return [_rows(exp, snapshot.live, {n: u for (j, n), u in snapshot.used.items() if j == i})
            for i, exp in enumerate(exps)]


def _rows(exp: Experiment, live: dict[str, LiveJob], used: dict) -> list[dict]:
    fps = fingerprints(exp)
    rows: dict[str, dict] = {}
    for name in topological_order(exp.stages):
        rec = state.job_record(exp.stage_dir(name))
        acct = safeio.read_json(exp.stage_paths(name).accounting, {}) or {}
        usage = used.get(name) or {}
        job = str(rec.get("job_id") or "")
        current, reason = _state(exp, name, fps[name], rec, live.get(job), usage.get("current"), acct)
        upstream_bad = [d for d in exp.stages[name].needs if rows[d]["state"] in NOT_SUCCEEDED]
        if upstream_bad and current in ("pending", "not-submitted", "stale") \
                and not contract.experiment_wide(exp.stages[name].kind):     # the report runs all the same
            current, reason = "never-run", f"upstream {upstream_bad[0]!r} did not succeed"
        rows[name] = {"stage": name, "state": current, "job_id": job or None,
                      "elapsed_s": usage.get("elapsed_s") or acct.get("wall_s"), "log": rec.get("log"),
                      "reason": reason, "progress": progress.read(exp.stage_dir(name)) if current == "running" else None}
    return list(rows.values())


def _usage_request(exp: Experiment, name: str, rec: dict, acct: dict) -> UsageRequest:
    """A stage's own cost: its job, or its own step of a one-allocation job, over every attempt;
    and its current job (whose own state is the stage's while no marker says otherwise)."""
    job = str(rec.get("job_id") or "")
    ids = [str(j) for j in acct.get("job_ids") or [job] if j]
    return UsageRequest(tuple(ids), f"{exp.name}.{name}", rec.get("step_id"), current=job)


def _state(exp, name, fp, rec, live: LiveJob | None, current: dict | None, acct: dict) -> tuple[str, str]:
    marker = state.success(exp.stage_dir(name))
    # One rule for cancelled jobs: _SUCCESS is only written when the stage's work completed before
    # any SIGTERM arrived (the runner stops on SIGTERM), so a marker means done whatever sacct says.
    if marker and marker.get("fingerprint") == fp:
        problems = state.artifact_problems(exp.stage_dir(name), marker)
        if problems:
            return "corrupt", f"{problems[0]}; `submit all` reruns it and what follows"
        if marker.get("status") == "skipped":
            return "skipped", acct.get("skip_reason") or ""
        return ("cached", "up to date from an earlier run") if rec.get("cached") else ("done", "")
    if live:
        return ("never-run" if live.never_starts else live.state), live.reason
    if rec.get("state") == "never-run":
        return "never-run", "an upstream stage failed; its job was cancelled before it started"
    # the runner saw the signal (no crash, resumable) in this very job, not in an earlier attempt
    interrupted = acct.get("status") == "interrupted" and _last_attempt_job(acct) in (None, str(rec.get("job_id")))
    if current and current.get("failed"):
        if interrupted:
            return "interrupted", f"{current['said']}; {_RESUMES}"
        return "failed", current["said"]
    if current and current.get("live"):
        return current["live"], current["said"]
    corrupt = safeio.read_json(exp.stage_paths(name).corrupt)
    if corrupt and not live:
        return "corrupt", f"{corrupt.get('reason')}; `submit all` reruns it and what follows"
    if interrupted:
        return "interrupted", f"{acct.get('error') or 'stopped by a signal'}; {_RESUMES}"
    if acct.get("status") == "failed" or rec.get("state") == "failed":
        return "failed", acct.get("error") or "the stage's process failed"
    if marker:
        return "stale", "finished with an older config or code; will rerun"
    return ("not-submitted", "") if not rec else ("failed", "the job ended without finishing the stage")


def _last_attempt_job(acct: dict) -> str | None:
    """The job of the stage's last recorded attempt (None when it ran outside any job)."""
    attempts = acct.get("attempt_log") or [{}]
    job = attempts[-1].get("job_id")
    return str(job) if job else None


def stuck_or_done(live: dict[str, LiveJob]) -> bool:
    """True when none of these live jobs can still run: all wait on dependencies, one of them can
    never be satisfied (its dependents further down only say they wait on a dependency), and each
    of the others waits on a job that is still live. A job whose dependencies have all ended but
    that is not marked yet either way is about to start or be marked (the scheduler decides on its
    next pass): not stuck yet."""
    if not live or not all(j.on_dependency for j in live.values()):
        return not live
    undecided = [j for j in live.values() if not j.never_starts and not any(d in live for d in j.waits_on)]
    return any(j.never_starts for j in live.values()) and not undecided


def reconcile(exp: Experiment) -> list[str]:
    return reconcile_all([exp])


def reconcile_all(exps: list[Experiment]) -> list[str]:
    """Cancel jobs that can never start; say which upstream failed and where its log is. Every
    experiment given (the plain run and its variants) from one snapshot of the scheduler and
    one cancel per backend; a message about a variant starts with `variant <name>: `.

    The scheduler marks only the direct dependents as never starting; jobs further down just wait
    on a dependency, so every queued job of a never-run stage is cancelled. Every job id a
    stage ever had is looked at: an earlier submit's job, superseded by a newer one but still
    waiting on a dependency, is cancelled too.
    """
    snapshot = take_snapshot(exps)
    messages, doomed = [], {}
    for exp, rows in zip(exps, states_of(exps, snapshot)):
        prefix = f"variant {exp.variant}: " if exp.variant else ""
        for name, job, where in _doomed_jobs(exp, {r["stage"]: r for r in rows}, snapshot.live):
            backend = state.job_executors(exp.stage_dir(name)).get(job) or "local"
            if job in doomed.setdefault(backend, {}):      # a folder variants share: once
                continue
            doomed[backend][job] = name
            messages.append(f"{prefix}cancelled {name} (job {job}): {where}")
    for backend, jobs in doomed.items():
        executors.backend(backend).cancel(list(jobs))
    return messages


def _doomed_jobs(exp: Experiment, rows: dict[str, dict], queued: dict[str, LiveJob]):
    """(stage, job, why) for each live job of the experiment that can never start or waits on a
    superseded dependency; a current job that never started is recorded so (status says never-run)."""
    for name, row in rows.items():
        for job in state.all_job_ids(exp.stage_dir(name)):
            live = queued.get(job)
            if not live:
                continue
            if job == row["job_id"] and row["state"] == "never-run":
                culprit = _failed_upstream(exp, rows, name)
                where = (f"upstream stage {culprit['stage']!r} failed (job {culprit['job_id']}, log: "
                         f"{culprit['log']})" if culprit else "an upstream stage did not succeed")
                record = state.job_record(exp.stage_dir(name))
                state.write_job_record(exp.stage_dir(name), {**record, "state": "never-run"})
            elif job != row["job_id"] and live.on_dependency:
                where = f"superseded by job {row['job_id']} and waiting on an old dependency"
            else:
                continue
            yield name, job, where


def _failed_upstream(exp: Experiment, rows: dict, name: str) -> dict | None:
    """The first failed stage above `name`, depth-first along `needs` in their order.

    An explicit stack (deep chains must not recurse) and a visited set (each stage once, where a
    diamond-shaped DAG would otherwise be walked once per path).
    """
    seen: set[str] = set()
    todo = list(reversed(exp.stages[name].needs))
    while todo:
        dep = todo.pop()
        if dep in seen:
            continue
        seen.add(dep)
        if rows[dep]["state"] in ("failed", "interrupted"):
            return rows[dep]
        todo.extend(reversed(exp.stages[dep].needs))
    return None
