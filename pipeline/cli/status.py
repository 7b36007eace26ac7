"""The state of every stage, from files on disk plus squeue/sacct; and `reconcile`."""
from __future__ import annotations

from pipeline.core import state
from pipeline.executors.slurm.sacct import FAILED_STATES, stage_usage
from pipeline.core.config import Experiment
from pipeline.core.dag import topological_order
from pipeline.executors.slurm.executor import query_sacct, query_squeue, scancel
import safeio
from pipeline.core.fingerprint import fingerprints

RUNNING_STATES = ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STAGE_OUT")
NEVER_SATISFIED = "DependencyNeverSatisfied"


def stage_states(exp: Experiment) -> list[dict]:
    """One row per stage: stage, state, job_id, elapsed_s, log, reason."""
    fps = fingerprints(exp)
    records = {n: state.job_record(exp.stage_dir(n)) for n in exp.stages}
    ids = [j for n, r in records.items() if r.get("executor") == "slurm" for j in state.all_job_ids(exp.stage_dir(n))]
    live = query_squeue(ids)
    sacct, _ = query_sacct(ids) if ids else ({}, None)
    rows: dict[str, dict] = {}
    for name in topological_order(exp.stages):
        rec = records[name]
        job = str(rec.get("job_id") or "")
        acct = safeio.read_json(exp.stage_dir(name) / "accounting.json", {}) or {}
        current, reason = _state(exp, name, fps[name], rec, live.get(job), sacct.get(job), acct)
        upstream_bad = [d for d in exp.stages[name].needs if rows[d]["state"] in ("failed", "never-run")]
        if upstream_bad and current in ("pending", "not-submitted", "stale"):
            current, reason = "never-run", f"upstream {upstream_bad[0]!r} did not succeed"
        # A stage's own cost: its job, or its own step of a one-allocation job, over every attempt.
        usage = stage_usage(sacct, acct.get("job_ids") or [job], f"{exp.name}.{name}", rec.get("step_id")) or {}
        elapsed = usage.get("elapsed_s") or acct.get("wall_s")
        rows[name] = {"stage": name, "state": current, "job_id": job or None, "elapsed_s": elapsed,
                      "log": rec.get("log"), "reason": reason}
    return list(rows.values())


def _state(exp, name, fp, rec, live, sacct, acct) -> tuple[str, str]:
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
        if live["state"] == "PENDING":
            never = live["reason"] == NEVER_SATISFIED
            return ("never-run" if never else "pending"), live["reason"]
        return ("running" if live["state"] in RUNNING_STATES else "pending"), live["state"]
    if sacct and sacct.get("state"):
        if sacct["state"] in FAILED_STATES:
            return "failed", f"sacct {sacct['state']}"
        if sacct["state"] in RUNNING_STATES or sacct["state"] == "PENDING":
            return ("running" if sacct["state"] != "PENDING" else "pending"), f"sacct {sacct['state']}"
    corrupt = safeio.read_json(exp.stage_dir(name) / state.CORRUPT)
    if corrupt and not live:
        return "corrupt", f"{corrupt.get('reason')}; `submit all` reruns it and what follows"
    if acct.get("status") in ("failed", "interrupted") or rec.get("state") == "failed":
        return "failed", acct.get("error") or "the stage's process failed"
    if rec.get("state") == "never-run":
        return "never-run", "an upstream stage failed"
    if marker:
        return "stale", "finished with an older config or code; will rerun"
    return ("not-submitted", "") if not rec else ("failed", "the job ended without finishing the stage")


def stuck_or_done(live: dict[str, dict]) -> bool:
    """True when none of these live jobs can still run: all wait on dependencies and one of them
    can never be satisfied (its dependents further down only say `Dependency`)."""
    waiting = [j for j in live.values() if j["state"] == "PENDING" and j["reason"].startswith("Dependency")]
    return not live or (len(waiting) == len(live) and any(j["reason"] == NEVER_SATISFIED for j in waiting))


def reconcile(exp: Experiment) -> list[str]:
    """Cancel jobs that can never start; say which upstream failed and where its log is.

    SLURM marks the direct dependents DependencyNeverSatisfied; jobs further down keep the plain
    `Dependency` reason, so every queued job of a never-run stage is cancelled. Every job id a
    stage ever had is looked at: an earlier submit's job, superseded by a newer one but still
    waiting on a dependency, is cancelled too.
    """
    rows = {r["stage"]: r for r in stage_states(exp)}
    history = {n: state.all_job_ids(exp.stage_dir(n)) for n in rows}
    queued = query_squeue([j for ids in history.values() for j in ids])
    messages, doomed = [], []
    for name, row in rows.items():
        for job in history[name]:
            live = queued.get(job)
            if not live:
                continue
            if job == row["job_id"] and row["state"] == "never-run":
                culprit = _failed_upstream(exp, rows, name)
                where = (f"upstream stage {culprit['stage']!r} failed (job {culprit['job_id']}, log: "
                         f"{culprit['log']})" if culprit else "an upstream stage did not succeed")
            elif job != row["job_id"] and live["state"] == "PENDING" and live["reason"].startswith("Dependency"):
                where = f"superseded by job {row['job_id']} and waiting on an old dependency"
            else:
                continue
            doomed.append(job)
            messages.append(f"cancelled {name} (job {job}): {where}")
    scancel(doomed)
    return messages


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
        if rows[dep]["state"] == "failed":
            return rows[dep]
        todo.extend(reversed(exp.stages[dep].needs))
    return None
