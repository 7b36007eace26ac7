"""SLURM backend through submitit: one job per stage, chained with --dependency; job arrays for
the runs of one stage; squeue and sacct for watching, scancel and scontrol for cancel and requeue.

This is the one module that runs SLURM's commands (sacct, squeue, sinfo, scancel, scontrol); it
parses their output with the pure functions of sacct.py.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Iterable

from pipeline.core.paths import log_dir
from pipeline.executors.base import (After, Executor, LiveJob, SchedulerUnavailable, Submission, SubmitError,
                                     UsageRequest)
from pipeline.executors.slurm.formats import gpu_request, mem_mb, time_minutes
from pipeline.executors.slurm.sacct import (FAILED_STATES, SACCT_FIELDS, array_id, parse_sacct, parse_squeue,
                                            stage_usage)

RUNNING_STATES = ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STAGE_OUT")
NEVER_SATISFIED = "DependencyNeverSatisfied"


def _stage_job_class():
    """The callable each SLURM job runs, built on first use: submitit is imported only where jobs
    are submitted (a GPU node running stages locally may not have it)."""
    import submitit

    class StageJob(submitit.helpers.Checkpointable):
        """Runs `entry(resolved config, stage)` in the job. Checkpointable: on the time-limit signal
        or preemption, submitit requeues the job, and the stage resumes from its own checkpoint."""

        def __init__(self, entry):
            self.entry = entry

        def __call__(self, resolved: dict, stage: str) -> dict:
            return self.entry(resolved, stage)
    return StageJob


class SlurmExecutor(Executor):
    name = "slurm"
    title = "SLURM"
    queues_jobs = True
    runs_arrays = True

    @classmethod
    def reachable(cls) -> tuple[bool, str]:
        return controller_reachable()

    def check(self, exp, stages: list[str]) -> list[str]:
        return check_resources(exp, stages, query_sinfo()) if stages else []

    def _executor(self, exp, stage: str, after: After):
        import submitit
        s = exp.stages[stage]
        r = s.resources
        ex = submitit.SlurmExecutor(folder=log_dir(exp.paths.logs, exp.name, stage), max_num_timeout=3)
        params = dict(job_name=f"{exp.name}.{stage}", time=time_minutes(r.time), cpus_per_task=r.cpus_per_task,
                      mem=r.mem, setup=[f"cd {shlex.quote(os.getcwd())}", *exp.setup, *s.setup],
                      signal_delay_s=exp.signal_delay_s, stderr_to_stdout=True,
                      additional_parameters={**gpu_request(r), **r.extra})
        optional = dict(partition=r.partition, constraint=r.constraint, account=r.account, qos=r.qos,
                        dependency=dependency(after))
        params.update({k: v for k, v in optional.items() if v is not None})
        if r.world_size > 1:
            # One process per task, started by srun; a task that exits with an error ends the step
            # (and the job) instead of leaving the others waiting in a collective.
            params.update(nodes=r.nodes, ntasks_per_node=r.tasks_per_node, srun_args=["--kill-on-bad-exit=1"])
        if r.array > 1:
            params.update(array_parallelism=r.array_limit or r.array)
        ex.update_parameters(**params)
        return ex

    def submit(self, exp, stage: str, after: After = After()) -> Submission:
        log_dir(exp.paths.logs, exp.name, stage).mkdir(parents=True, exist_ok=True)
        ex = self._executor(exp, stage, after)
        job = _stage_job_class()(self.entry)
        tasks = exp.stages[stage].resources.array
        with refusal_explained(exp, stage):
            if tasks == 1:
                submitted = ex.submit(job, exp.raw, stage)
                return Submission(stage, str(submitted.job_id), Path(submitted.paths.stdout), "submitted")
            with ex.batch():   # one sbatch --array=0-(N-1)%limit; the stage records the array's id
                jobs = [ex.submit(job, exp.raw, stage) for _ in range(tasks)]
        return Submission(stage, array_id(str(jobs[0].job_id)), Path(jobs[0].paths.stdout), "submitted")

    def submit_array(self, exps: list, stage: str, after: After, limit: int = 0) -> list[Submission]:
        """The same stage of several variants (same resources) as one job array, task i running
        variant i's config; `after.each` makes task i wait for task i of an upstream array."""
        exp = exps[0]
        log_dir(exp.paths.logs, exp.name, stage).mkdir(parents=True, exist_ok=True)
        ex = self._executor(exp, stage, after)
        ex.update_parameters(array_parallelism=limit or len(exps))
        job = _stage_job_class()(self.entry)
        with refusal_explained(exp, stage), ex.batch():
            jobs = [ex.submit(job, e.raw, stage) for e in exps]
        return [Submission(stage, str(j.job_id), Path(j.paths.stdout), "submitted") for j in jobs]

    def cancel(self, job_ids: list[str]) -> None:
        scancel(job_ids)

    def script(self, exp, stage: str, after: After = After(), tasks: int = 0, limit: int = 0) -> str:
        """`tasks` > 0: the script of a job array of that many variants (submit_array)."""
        ex = self._executor(exp, stage, after)
        tasks = tasks or exp.stages[stage].resources.array
        if tasks > 1:    # what submitit sets when it submits a batch
            ex.parameters["map_count"] = tasks
            ex.parameters["array_parallelism"] = limit or ex.parameters.get("array_parallelism") or tasks
        # submitit's own renderer: exactly the text `submit` hands to sbatch (minus real job ids).
        return ex._make_submission_file_text(ex._submitit_command_str, "dry-run")

    def live(self, job_ids: list[str]) -> dict[str, LiveJob]:
        rows = query_squeue(job_ids)
        tasks: dict[str, list[str]] = {}
        for job in rows:
            if "_" in job:
                tasks.setdefault(array_id(job), []).append(job)
        for row in rows.values():   # a dependency on an array: on its tasks that are live here
            row["waits_on"] = [t for d in row.get("waits_on", []) for t in tasks.get(d, [d])]
        return {job: live_job(v) for job, v in rows.items()}

    def accounting(self, requests: list[UsageRequest]) -> tuple[list[dict | None], str | None]:
        jobs, why = query_sacct(j for r in requests for j in (*r.job_ids, r.current))
        return [_usage(jobs, r) for r in requests], why

    def array_task(self, job_id: str) -> tuple[str, int] | None:
        """`123_4` -> (`123`, 4): sacct's and squeue's name for task 4 of array 123."""
        head, sep, task = str(job_id).rpartition("_")
        return (head, int(task)) if sep and task.isdigit() else None

    def dry_run_task_id(self, array: str, task: int) -> str:
        return f"{array}_{task}"

    def describe(self, after: After) -> str:
        return dependency(after) or ""


# What sbatch says when it refuses a job (SLURM 22.05's messages, matched loosely: older and newer
# versions word some of them differently) -> the setting to change, and how to find a valid value.
REFUSALS = (
    (r"violates|qosmax|assocmax|qosgrp|assocgrp", "qos", "one whose limits allow this request, or ask for less "
     "(`sacctmgr show assoc user=$USER`)"),
    (r"invalid partition", "partition", "a partition of `sinfo -s` (or set the profile's partitions)"),
    (r"invalid account", "account", "one of `sacctmgr show assoc user=$USER format=account`"),
    (r"invalid qos", "qos", "one of `sacctmgr show assoc user=$USER format=qos`"),
    (r"invalid feature|invalid constraint", "constraint", "features of `sinfo -o '%P %f'`"),
    (r"gres|generic resource|gpu", "gpus", "what `sinfo -o '%P %G'` lists (gpus, gpu_type, gpu_request)"),
    (r"time limit", "time", "within the partition's limit (`sinfo -o '%P %l'`)"),
    (r"node configuration is not available", "cpus_per_task", "what a node of the partition has "
     "(cpus_per_task, mem, gpus, constraint: `sinfo -N -o '%P %c %m %G %f'`)"),
)


@contextlib.contextmanager
def refusal_explained(exp, stage: str):
    """A job sbatch refuses: SubmitError, one line with sbatch's own words and the setting to change."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - submitit raises plain RuntimeErrors with sbatch's output
        raise SubmitError(explain_refusal(str(err), exp.stages[stage].resources, f"stages.{stage}.resources")) from err


def explain_refusal(text: str, resources, key: str) -> str:
    """sbatch's refusal (its last `error:` line) and the resource setting it is about."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = next((line.split("error:", 1)[1].strip() for line in reversed(lines) if "error:" in line),
                lines[-1] if lines else "no reason given")
    for pattern, name, valid in REFUSALS:
        if re.search(pattern, said, re.I):
            return f"sbatch refused it: {said}; change {key}.{name} (now {getattr(resources, name)!r}) to {valid}"
    return f"sbatch refused it: {said}"


def dependency(after: After) -> str | None:
    """sbatch --dependency: afterok on jobs, aftercorr on arrays task by task, afterany on jobs."""
    parts = (["afterok:" + ":".join(after.ok)] if after.ok else []) + [f"aftercorr:{a}" for a in after.each]
    parts += ["afterany:" + ":".join(after.any)] if after.any else []
    return ",".join(parts) or None


def live_job(squeue: dict) -> LiveJob:
    """An squeue line ({state, reason}) in the engine's terms."""
    pending = squeue["state"] == "PENDING"
    return LiveJob(state="running" if squeue["state"] in RUNNING_STATES else "pending",
                   reason=squeue["reason"] if pending else squeue["state"],
                   on_dependency=pending and squeue["reason"].startswith("Dependency"),
                   never_starts=pending and squeue["reason"] == NEVER_SATISFIED,
                   waits_on=tuple(squeue.get("waits_on") or ()))


def _usage(jobs: dict[str, dict], request: UsageRequest) -> dict | None:
    """A stage's usage over its jobs, with `failed` and `current` (the current job's own state)."""
    usage = stage_usage(jobs, request.job_ids, request.step_name, request.step_id)
    current = jobs.get(str(request.current)) if request.current else None
    if usage is None and current is None:
        return None
    out = dict(usage or {})
    if usage:
        out["failed"] = usage["state"] in FAILED_STATES
    if current:
        out["current"] = {"state": current["state"], "failed": current["state"] in FAILED_STATES,
                          "live": "pending" if current["state"] == "PENDING" else
                          "running" if current["state"] in RUNNING_STATES else None,
                          "said": f"sacct {current['state']}{_ADVISED.get(current['state'], '')}"}
    return out


# End states the next submit can avoid by asking for more: what `status` adds to the state.
_ADVISED = {"OUT_OF_MEMORY": ": it used more than its mem; `advise` says how much to ask, `submit --right-size` asks it",
            "TIMEOUT": ": it ran past its time limit; `advise` says how long to ask, `submit --right-size` asks it"}


def partition_limits(sinfo_text: str) -> tuple[dict[str, dict], str | None]:
    """`sinfo -h -N -o %P|%c|%m|%G` -> the largest node of each partition, and the default one."""
    limits: dict[str, dict] = {}
    default = None
    for line in sinfo_text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        name, cpus, mem, gres = parts
        if name.endswith("*"):
            name = default = name[:-1]
        gpus = sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        lim = limits.setdefault(name, {"cpus": 0, "mem_mb": 0, "gpus": 0, "nodes": 0})
        lim["nodes"] += 1
        lim["cpus"] = max(lim["cpus"], int(cpus.rstrip("+") or 0))
        lim["mem_mb"] = max(lim["mem_mb"], int(re.sub(r"\D", "", mem) or 0))
        lim["gpus"] = max(lim["gpus"], gpus)
    return limits, default


def check_resources(exp: Experiment, stages: list[str], sinfo_text: str) -> list[str]:
    """What no node of the requested partition can ever give: SLURM would queue such a job
    forever (reason PartitionConfig). Returns one message per problem."""
    limits, default = partition_limits(sinfo_text)
    problems = []
    for name in stages:
        r = exp.stages[name].resources
        part = r.partition or default
        lim = limits.get(part)
        key = f"stages.{name}.resources"
        if lim is None:
            problems.append(f"{key}.partition: no partition {part!r} on this cluster; partitions: {', '.join(limits)}")
            continue
        if r.cpus_per_task * r.tasks_per_node > lim["cpus"]:
            per = f" x {r.tasks_per_node} tasks per node" if r.tasks_per_node > 1 else ""
            problems.append(f"{key}.cpus_per_task={r.cpus_per_task}{per}: nodes of partition {part!r} have at most "
                            f"{lim['cpus']}")
        if r.nodes > lim["nodes"]:
            problems.append(f"{key}.nodes={r.nodes}: partition {part!r} has {lim['nodes']} node(s)")
        if lim["mem_mb"] and mem_mb(r.mem) > lim["mem_mb"]:
            problems.append(f"{key}.mem={r.mem}: nodes of partition {part!r} have at most {lim['mem_mb']}M")
        if r.gpus > lim["gpus"]:
            problems.append(f"{key}.gpus={r.gpus}: nodes of partition {part!r} have at most {lim['gpus']} GPUs "
                            "(pick a GPU partition with resources.partition, or set gpus=0 to run on CPU)")
    return problems


# How long a query of the controller may take before it counts as not answering. A client retries
# a controller that refuses connections for about MessageTimeout (10 s by default: squeue gave up
# after 9 s here with slurmctld stopped); one that hangs would otherwise hang the command.
CONTROLLER_TIMEOUT_S = 30


def ask_controller(argv: list[str]) -> str:
    """Run a command the SLURM controller answers (sinfo, squeue); its stdout. When the
    controller does not answer in time, or the command fails, SchedulerUnavailable: one line."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=CONTROLLER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        said = f"no answer to `{argv[0]}` within {CONTROLLER_TIMEOUT_S} s"
    except OSError as err:
        said = f"`{argv[0]}` could not run: {err}"
    else:
        if out.returncode == 0:
            return out.stdout
        lines = [line.strip() for line in out.stderr.splitlines() if line.strip()]
        # the line about the controller, not a configuration warning printed before it
        said = next((line for line in lines if re.search(r"controller|connect|timed out", line, re.I)),
                    lines[-1] if lines else f"exit code {out.returncode}")
        said = f"`{argv[0]}` said: {said}"
    raise SchedulerUnavailable(f"the SLURM controller does not answer ({said}); nothing was looked at or "
                               "changed. Check `scontrol ping` (or ask the cluster's admins) and run it again")


def query_sinfo() -> str:
    """Every node of every partition, as partition_limits reads it."""
    return ask_controller(["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G"])


def controller_reachable() -> tuple[bool, str]:
    """SLURM is usable when `sbatch` exists and the controller answers `scontrol ping`."""
    if shutil.which("sbatch") is None:
        return False, "no `sbatch` on PATH"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"`scontrol ping` failed: {err}"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return False, f"the SLURM controller does not answer: {(ping.stdout + ping.stderr).strip()}"
    return True, "controller is UP"


def query_sacct(job_ids: Iterable[str]) -> tuple[dict[str, dict], str | None]:
    """Run sacct (every attempt of each job) for these jobs: one call, or one per chunk of a job
    list too long for one command line. Returns (summaries, None) or ({}, why accounting is
    unavailable)."""
    ids = sacct_ids(job_ids)
    if not ids:
        return {}, "no SLURM job ids recorded (stages ran locally)"
    if shutil.which("sacct") is None:
        return {}, "`sacct` is not installed here"
    text = []
    for chunk in chunked(ids, SACCT_IDS_CHARS):
        try:
            out = subprocess.run(["sacct", "--duplicates", "--parsable2", "--noheader", "-j", ",".join(chunk),
                                  "-o", ",".join(SACCT_FIELDS)], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            return {}, f"sacct failed: {err}"
        if out.returncode != 0:
            said = " / ".join(line.strip() for line in out.stderr.splitlines() if line.strip())
            return {}, f"sacct failed (is slurmdbd running, and accounting configured?): {said[:300]}"
        text.append(out.stdout)
    return parse_sacct("".join(text)), None


# sacct -j takes one comma-separated argument; Linux caps one argument at 128 KiB (MAX_ARG_STRLEN).
# Longer lists go in chunks well below it.
SACCT_IDS_CHARS = 100_000


def sacct_ids(job_ids: Iterable[str]) -> list[str]:
    """The ids to ask sacct for: a job array's own id once for all its tasks (sacct lists every
    task of `123` as `123_<i>`), so a 1,000-variant array is one id, not 1,000."""
    return sorted({array_id(str(j)) for j in job_ids if j and str(j)[0].isdigit()})


def chunked(ids: list[str], max_chars: int) -> list[list[str]]:
    """Consecutive runs of `ids` whose comma-joined text stays within max_chars."""
    chunks: list[list[str]] = [[]]
    size = 0
    for job in ids:
        if chunks[-1] and size + len(job) + 1 > max_chars:
            chunks.append([])
            size = 0
        chunks[-1].append(job)
        size += len(job) + 1
    return chunks


def query_squeue(job_ids: Iterable[str]) -> dict[str, dict]:
    """Live jobs among these ids, in one squeue call that lists this user's jobs only (never the
    whole cluster's); `squeue -j` would fail outright on one purged id."""
    ids = {str(j) for j in job_ids if j}
    if not ids or shutil.which("squeue") is None:
        return {}
    # -r: one line per array task (`123_4`), pending ones too, as stages record them
    out = ask_controller(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%j|%T|%r|%E"])
    return {j: v for j, v in parse_squeue(out).items() if j in ids}


def scancel(job_ids: list[str]) -> None:
    """Cancel these jobs; a refusal is printed, not raised (callers report the jobs as cancelled)."""
    if not job_ids:
        return
    done = subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        print(f"[pipeline] warning: scancel {' '.join(job_ids)} failed: {done.stderr.strip()}", flush=True)


def requeue(job_id: str) -> None:
    """Put a running job back in the queue (`scontrol requeue`); it starts again under the same id.
    Called from signal handlers, so it only runs the command and never raises on its answer."""
    subprocess.run(["scontrol", "requeue", job_id], check=False)

