"""Efficiency records: sacct parsing (small pure functions) and the efficiency.csv columns.
The commands themselves run in pipeline/executors/slurm.py; everything here works on their text.

What sacct reports (checked on the local cluster, slurm 22.05, `sacct --duplicates`):
- a requeued job keeps its id; `sacct -j` shows only its last attempt, `--duplicates` every one,
  each as a job line (state REQUEUED for the earlier ones) followed by that attempt's steps;
- the job line's TotalCPU is the sum of its steps' (batch, extern, 0, 1, ...): summing the job
  lines of the attempts counts every CPU second once;
- MaxRSS is only on step lines and is the largest task of the step; NTasks says how many tasks;
- while a job or step runs, TotalCPU counts only the steps that have finished (and MaxRSS too);
- ReqMem (`500M`; older releases add `n` per node or `c` per CPU), Timelimit, Submit, Eligible,
  Start and End are on the job line (steps have their own Start/End, no ReqMem or Timelimit);
  Eligible is when the job could first start: after its dependencies were satisfied, so Start -
  Eligible is the wait for resources alone; a job not started yet has Start `Unknown`;
- ConsumedEnergyRaw (joules) is 0 where no AcctGatherEnergyType records energy (the local
  cluster: acct_gather_energy/none); TRESUsageInAve has `gres/gpuutil=` only where the cluster
  gathers GPU usage.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Iterable

# SLURM end states that mean the job did not succeed (sacct(1) JOB STATE CODES).
FAILED_STATES = ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                 "BOOT_FAIL", "DEADLINE")
# States after which sacct's CPU time is complete; in any other (PENDING, RUNNING, REQUEUED...)
# TotalCPU counts only the steps that already ended, so no CPU time or efficiency is reported.
ENDED_STATES = ("COMPLETED", "REVOKED") + FAILED_STATES
# States of an earlier attempt that the next attempt of the same job id continues (requeue).
REQUEUED_STATES = ("REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL",
                   "SPECIAL_EXIT")
SACCT_FIELDS = ("JobID", "JobName", "State", "Elapsed", "TotalCPU", "MaxRSS", "AllocCPUS", "NodeList",
                "Partition", "NTasks", "ReqMem", "Timelimit", "Submit", "Eligible", "Start", "End",
                "ConsumedEnergyRaw", "TRESUsageInAve")
# The fields every record has had since the first release of this parser: a line with fewer is not one.
_REQUIRED_FIELDS = 9
_SIZE_UNITS = {"": 1 / 2**20, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}


def parse_duration(text: str) -> float | None:
    """sacct time -> seconds: `1-02:03:04`, `02:03:04`, `03:04`, `00:01.234`, `1:02.5`."""
    text = (text or "").strip()
    if not text or text in ("INVALID", "UNLIMITED", "Partition_Limit"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [float(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    h, m, s = parts
    return days * 86400 + h * 3600 + m * 60 + s


def parse_size_mb(text: str) -> float | None:
    """sacct memory -> MiB: `1.5G`, `512K`, `100M`, `0`; a bare number is bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGTP]?)\s*", text or "")
    if not match:
        return None
    return float(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_timestamp(text: str) -> float | None:
    """sacct time stamp (`2026-12-07T15:53:54`, the cluster's local time) -> Unix seconds;
    `Unknown`, `None` (not started or not ended yet) -> None."""
    try:
        return datetime.fromisoformat((text or "").strip()).timestamp()
    except ValueError:
        return None


def parse_req_mem_mb(text: str, cpus: int) -> float | None:
    """ReqMem -> MiB for the whole job on its node: `4G`, `4Gn` (per node), `2Gc` (per CPU: x CPUs)."""
    text = (text or "").strip()
    per_cpu = text.endswith("c")
    mb = parse_size_mb(text.rstrip("nc"))
    if mb is None or mb == 0:
        return None
    return mb * (cpus or 1) if per_cpu else mb


def parse_energy_j(text: str) -> float | None:
    """ConsumedEnergyRaw -> joules; 0 or empty means the cluster recorded none (no energy plugin)."""
    try:
        joules = float(text)
    except (TypeError, ValueError):
        return None
    return joules or None


def parse_gpu_util(tres: str) -> float | None:
    """TRESUsageInAve's `gres/gpuutil=NN` (percent), where the cluster gathers it; else None."""
    match = re.search(r"gres/gpuutil=([0-9.]+)", tres or "")
    return float(match.group(1)) if match else None


def parse_state(text: str) -> str:
    """`CANCELLED by 0` -> `CANCELLED`; `COMPLETED` stays."""
    return (text or "").split(" ")[0].strip()


def split_job_id(job_id: str) -> tuple[str, str | None]:
    """`123.batch` -> (`123`, `batch`); `123_4.0` -> (`123_4`, `0`); `123_[5-7]` -> (`123_[5-7]`, None)."""
    head, _, step = job_id.partition(".")
    return head, (step or None)


def parse_sacct_line(row: dict) -> dict:
    """One sacct line (field name -> text) -> its usage: the line's own numbers, nothing summed.

    maxrss_task_mb is sacct's MaxRSS (the largest task); maxrss_step_mb is MaxRSS x NTasks, what
    the step's tasks could hold together (sacct has no per-step total).
    """
    job, step = split_job_id(row["JobID"])
    rss = parse_size_mb(row.get("MaxRSS", ""))
    ntasks = int(row["NTasks"]) if (row.get("NTasks") or "").isdigit() else 1
    cpus = int(row["AllocCPUS"] or 0)
    submit, eligible, start = (parse_timestamp(row.get(k, "")) for k in ("Submit", "Eligible", "Start"))
    since = eligible if eligible is not None else submit
    return {"job": job, "step": step, "name": row.get("JobName", ""), "state": parse_state(row["State"]),
            "elapsed_s": parse_duration(row["Elapsed"]), "totalcpu_s": parse_duration(row["TotalCPU"]),
            "alloc_cpus": cpus, "node": row.get("NodeList") or None,
            "partition": row.get("Partition") or None, "maxrss_task_mb": rss,
            "maxrss_step_mb": None if rss is None else rss * ntasks,
            "req_mem_mb": parse_req_mem_mb(row.get("ReqMem", ""), cpus),
            "timelimit_s": parse_duration(row.get("Timelimit", "")),
            "submit": submit, "start": start, "end": parse_timestamp(row.get("End", "")),
            "queue_wait_s": None if step or start is None or since is None else round(max(0.0, start - since), 3),
            "energy_j": parse_energy_j(row.get("ConsumedEnergyRaw", "")),
            "gpu_util": parse_gpu_util(row.get("TRESUsageInAve", ""))}


def parse_sacct_rows(text: str) -> list[dict]:
    """`sacct --parsable2 -o <fields>` -> one usage per line, in sacct's order. A header line, if
    present, names the fields; without one they are SACCT_FIELDS."""
    fields: tuple[str, ...] = SACCT_FIELDS
    rows = []
    for line in text.splitlines():
        cells = line.split("|")
        if cells[0] == "JobID":
            fields = tuple(cells)
            continue
        if len(cells) < _REQUIRED_FIELDS or not cells[0]:   # later fields may be missing in old records
            continue
        rows.append(parse_sacct_line(dict(zip(fields, cells))))
    return rows


def group_attempts(rows: list[dict]) -> dict[str, list[dict]]:
    """Lines -> job id -> its attempts, oldest first: {"job": job line, "steps": [step lines]}.

    With --duplicates each attempt is its job line followed by its own steps; a step line belongs
    to the latest job line of its id seen so far. Steps are a list, not keyed by step id: step ids
    restart in each attempt, and slurmdbd can list an earlier attempt's steps (recorded after the
    requeue) under the later job line, where a step-id key would let one overwrite the other.
    """
    jobs: dict[str, list[dict]] = {}
    for row in rows:
        attempts = jobs.setdefault(row["job"], [])
        if row["step"] is None:
            attempts.append({"job": row, "steps": []})
        elif attempts:
            attempts[-1]["steps"].append(row)
    return jobs


def current_attempts(attempts: list[dict]) -> list[dict]:
    """The last attempt and the earlier ones it continues (each requeued into the next, same job
    name). Stops at anything else: after a controller reset SLURM reuses job ids for new jobs."""
    if not attempts:
        return []
    chain = [attempts[-1]]
    for earlier in reversed(attempts[:-1]):
        if earlier["job"]["state"] not in REQUEUED_STATES or earlier["job"]["name"] != chain[0]["job"]["name"]:
            break
        chain.insert(0, earlier)
    return chain


def attempt_usage(attempt: dict) -> dict:
    """A job attempt's usage: its job line (elapsed, CPU, what it asked, when it queued and ran),
    the largest MaxRSS of its steps, the mean GPU utilisation its steps recorded."""
    usage = dict(attempt["job"])
    steps = attempt["steps"]
    # The stage runs in a step (submitit's srun): a cgroup OOM kill marks that step OUT_OF_MEMORY,
    # but the job ends FAILED (its batch script only saw srun fail). The state of the step that
    # ended the job, its last numbered one, is the cause (not an earlier step's, which went on).
    numbered = [s for s in steps if (s["step"] or "").isdigit()]
    if usage["state"] == "FAILED" and numbered and numbered[-1]["state"] == "OUT_OF_MEMORY":
        usage["state"] = "OUT_OF_MEMORY"
    for key in ("maxrss_task_mb", "maxrss_step_mb"):
        values = [s[key] for s in steps if s[key] is not None]
        usage[key] = max(values) if values else None
    utils = [s["gpu_util"] for s in steps if s.get("gpu_util") is not None]
    usage["gpu_util"] = sum(utils) / len(utils) if utils else None
    return usage


def combine(parts: list[dict]) -> dict | None:
    """Usages of several attempts or steps -> one summary: elapsed, CPU, queue wait and energy
    summed, MaxRSS the largest, what was asked and the state of the last one; `parts` keeps each
    attempt's own numbers. CPU time and efficiency stay empty until the last one ended."""
    if not parts:
        return None
    last = parts[-1]
    ended = last["state"] in ENDED_STATES
    elapsed = sum(p["elapsed_s"] or 0.0 for p in parts)
    core_s = sum((p["elapsed_s"] or 0.0) * (p["alloc_cpus"] or 0) for p in parts)
    totalcpu = sum(p["totalcpu_s"] or 0.0 for p in parts) if ended else None

    def known(key):
        return [p[key] for p in parts if p.get(key) is not None]

    def largest(key):
        return max(known(key)) if known(key) else None

    def total(key):
        return round(sum(known(key)), 3) if known(key) else None
    return {"state": last["state"], "ended": ended, "attempts": len(parts), "elapsed_s": round(elapsed, 3),
            "totalcpu_s": None if totalcpu is None else round(totalcpu, 3), "core_s": round(core_s, 3),
            "alloc_cpus": last["alloc_cpus"], "node": last["node"],
            "partition": next((p["partition"] for p in reversed(parts) if p["partition"]), None),
            "maxrss_task_mb": largest("maxrss_task_mb"), "maxrss_step_mb": largest("maxrss_step_mb"),
            "req_mem_mb": last.get("req_mem_mb"), "timelimit_s": last.get("timelimit_s"),
            "queue_wait_s": total("queue_wait_s"), "energy_j": total("energy_j"),
            "gpu_util": sum(known("gpu_util")) / len(known("gpu_util")) if known("gpu_util") else None,
            "submit": min(known("submit")) if known("submit") else None,
            "end": last.get("end") if ended else None,
            "parts": [{k: p.get(k) for k in PART_KEYS} for p in parts]}


# What each attempt (or step) keeps of its own in a summary's `parts`.
PART_KEYS = ("job", "step", "state", "elapsed_s", "totalcpu_s", "alloc_cpus", "maxrss_step_mb", "req_mem_mb",
             "timelimit_s", "submit", "start", "end", "queue_wait_s", "energy_j")


def parse_sacct(text: str) -> dict[str, dict]:
    """`sacct --duplicates --parsable2 -o <SACCT_FIELDS>` -> job id -> summary of its current
    attempts (see `combine`), plus `name` and `attempts_detail` (the attempts themselves)."""
    jobs = {}
    for job, attempts in group_attempts(parse_sacct_rows(text)).items():
        chain = current_attempts(attempts)
        jobs[job] = {**combine([attempt_usage(a) for a in chain]), "name": chain[-1]["job"]["name"],
                     "attempts_detail": chain}
    return {**_array_summaries(jobs), **jobs}


def array_id(job_id: str) -> str:
    """`123_4` and `123_[5-7%2]` -> `123` (the array's id, what afterok waits on); others unchanged."""
    return job_id.split("_", 1)[0]


def _array_summaries(jobs: dict[str, dict]) -> dict[str, dict]:
    """Job arrays (`<id>_<task>` lines) -> one entry under `<id>` over every task: elapsed and CPU
    summed (the array's whole cost), `array_tasks` the task ids. Its state is that of a failed
    task if any failed, else of a task still pending or running, else the last task's."""
    tasks: dict[str, list[str]] = {}
    for job in jobs:
        if "_" in job:
            tasks.setdefault(array_id(job), []).append(job)
    out = {}
    for head, ids in tasks.items():
        attempts = [a for j in ids for a in jobs[j]["attempts_detail"]]
        summary = combine([attempt_usage(a) for a in attempts])
        states = [jobs[j]["state"] for j in ids]
        bad = [s for s in states if s in FAILED_STATES]
        live = [s for s in states if s not in ENDED_STATES]
        summary["state"] = (bad or live or [summary["state"]])[0]
        summary["ended"] = not live
        if live:
            summary["totalcpu_s"] = None
        out[head] = {**summary, "name": jobs[ids[0]]["name"], "attempts_detail": attempts, "array_tasks": ids}
    return out


def stage_usage(jobs: dict[str, dict], job_ids: Iterable[str], step_name: str | None = None,
                step_id: str | None = None) -> dict | None:
    """What one stage cost, over every job that ran an attempt of it (see `_stage_parts`)."""
    ids = [j for j in dict.fromkeys(str(j) for j in job_ids if j) if j in jobs]
    ids = [j for j in ids if "_" not in j or array_id(j) not in ids]     # an array counts its tasks once
    parts = []
    for i, job in enumerate(ids):
        parts += _stage_parts(jobs[job], step_name, step_id if i == len(ids) - 1 else None)
    return combine(parts)


def _stage_parts(job: dict, step_name: str | None, step_id: str | None) -> list[dict]:
    """A job named after the stage (one job per stage) is all that stage's: every attempt. In a
    job named otherwise (one allocation for the whole DAG) the stage is its own steps, named
    `<experiment>.<stage>`, in every attempt (step numbers restart when a job is requeued); a
    recorded step id is the fallback. Never the whole allocation for a stage that ran as a step."""
    if not step_name or job["name"] == step_name:
        return [attempt_usage(a) for a in job["attempts_detail"]]
    # a step asks for nothing itself: it holds its allocation's memory (no time limit or queue of its own)
    named = [{**s, "req_mem_mb": a["job"]["req_mem_mb"]} for a in job["attempts_detail"] for s in a["steps"]
             if s["name"] == step_name]
    if named:
        return named
    if step_id is not None:
        last = job["attempts_detail"][-1]
        same_id = [{**s, "req_mem_mb": last["job"]["req_mem_mb"]} for s in last["steps"] if s["step"] == str(step_id)]
        return same_id[-1:]
    return [attempt_usage(a) for a in job["attempts_detail"]]


def parse_dependency(text: str) -> list[str]:
    """squeue's %E (`afterok:608(unfulfilled),aftercorr:45_*(unfulfilled)`, `(null)`) -> the job ids
    whose fulfilment is still open: `608`, `45` (an array task by task: its id)."""
    ids = re.findall(r"after\w*:([0-9][0-9_\[\]*-]*)(?:\+\d+)?\((?:unfulfilled)\)", text or "")
    return [j[:-2] if j.endswith("_*") else j for j in ids]


def parse_squeue(text: str) -> dict[str, dict]:
    """`squeue -h -o %i|%j|%T|%r|%E` -> job id -> {name, state, reason, waits_on}; waits_on: the jobs
    of its dependencies not yet fulfilled (an array's id for `aftercorr:123_*`)."""
    jobs: dict[str, dict] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) in (4, 5):
            jobs[parts[0]] = {"name": parts[1], "state": parts[2], "reason": parts[3],
                              **({"waits_on": parse_dependency(parts[4])} if len(parts) == 5 else {})}
    # A job array's tasks (`123_0`, pending ones as `123_[1-3]`) also stand under the array's id,
    # which is what a stage records: a running task's state first, else a pending one's.
    arrays: dict[str, dict] = {}
    for job, live in jobs.items():
        if "_" in job and (array_id(job) not in arrays or live["state"] != "PENDING"):
            arrays[array_id(job)] = live
    return {**arrays, **jobs}
