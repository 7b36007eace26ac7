"""Run stages in this process: what queued jobs, the local executor and tests all call."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import yaml

import safeio
from pipeline import contract, executors
from pipeline.accounting.record import METRIC_COLUMNS
from pipeline.accounting.samplers import IdleStop, Sampler, SamplerSettings
from pipeline.contract import StageContext, UpstreamError
from pipeline.core import state
from pipeline.core.config import Experiment, from_raw, resolved_stage_config
from pipeline.core.dag import forced, select
from pipeline.core.fingerprint import fingerprints
from pipeline.core.paths import REPO_ROOT, StagePaths
from pipeline.core.progress import ProgressWriter, no_progress
from pipeline.core.schema import build


class UpstreamNotDone(RuntimeError):
    pass


class StageStopped(BaseException):
    """SIGTERM reached a running stage (scancel, or the end of the job): it stops unfinished."""


# submitit raises this from its time-limit signal handler when it will not requeue the job:
# the stage was interrupted, not broken, so a later run resumes it.
_INTERRUPTION_NAMES = {"UncompletedJobError"}


def stage_logger(exp: str, stage: str) -> logging.Logger:
    log = logging.getLogger(f"{exp}.{stage}")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s | %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def run_stage(exp: Experiment, name: str, job_id: str | None = None, fps: dict | None = None,
              fresh: bool = False) -> dict:
    """Run one stage; write metrics.json, accounting.json, config.yaml, then _SUCCESS last.

    It resumes only an attempt that was interrupted (requeue, preemption, time limit, kill) with
    the same fingerprint; otherwise, or when `fresh`, it first removes the earlier run's outputs.
    """
    stage = exp.stages[name]
    fps = fps or fingerprints(exp)
    if not contract.get(stage.kind).needs_order_only:
        check_upstream(exp, name, fps)
    out = exp.stage_dir(name)
    files = StagePaths(out)
    if stage.resources.array > 1:
        return _run_array_task(exp, name, out, fps[name], fresh, job_id)
    rank = _join_distributed(stage.resources.world_size)
    if rank > 0:
        return _run_follower(exp, name, out, fps[name], rank)
    log = stage_logger(exp.name, name)
    with safeio.exclusive_lock(files.run_lock, f"a run of stage {exp.name}/{name}"):
        state.clear_success(out)  # from here on the stage is not done until it says so
        tries = _begin_attempt(out, fps[name], job_id, fresh, log)
        # run by hand (`pipeline run`, no job): recorded too, so status stops showing an older job
        _record_job(out, job_id or f"local-{os.getpid()}-{name}", fps[name])
        safeio.atomic_write_text(files.config, yaml.safe_dump(
            resolved_stage_config(exp, name, fps[name]), sort_keys=False))
        ctx = _context(exp, name, out, fps[name])
        record = _base_record(exp, name, job_id, fps[name])
        log.info("start %s (kind %s, fingerprint %s, job %s, attempt %d)", name, stage.kind, fps[name],
                 job_id or "-", len(tries["attempts"]))
        started = time.time()
        with _StopOnSigterm() as stopper, _heartbeat(files.attempts), _sampled(exp, name, log) as sampler:
            try:
                metrics = contract.get(stage.kind).run(stage.params, ctx) or {}
                stopper.disarm()  # the stage's work is complete: a SIGTERM from now on changes nothing
            except BaseException as err:
                stopper.disarm()
                record.update(sampler.stop())
                _end_failed_attempt(exp, name, err, ctx, record, tries, started)
                raise
        record.update(sampler.stop())
        status = metrics.pop("status", "done")
        record.update(_finish(started), status=status, skip_reason=metrics.pop("skip_reason", None))
        record.update({k: metrics[k] for k in METRIC_COLUMNS if k in metrics})
        record.update(ctx.accounting)
        record.update(_close_attempt(tries, status, record["wall_s"]))
        safeio.atomic_write_json(files.metrics, metrics)
        safeio.atomic_write_json(files.accounting, record)
        state.mark_success(out, fps[name], status, job_id)
        state.discard_attempts(out)   # the result is done: a later run starts clean
        log.info("%s %s in %.1f s (%d attempt(s), %.1f s in all)", name, status, record["attempt_wall_s"],
                 record["attempts"], record["wall_s"])
        return record


def _join_distributed(world_size: int) -> int:
    """For a stage that runs as several processes: export the env:// rendezvous variables
    from this batch task's and return its rank (0 for a 1-process stage)."""
    if world_size == 1:
        return 0
    os.environ.update(executors.rendezvous_env(world_size))
    return int(os.environ["RANK"])


def _run_follower(exp: Experiment, name: str, out: Path, fingerprint: str, rank: int) -> dict:
    """Rank > 0 of a several-process stage: the same stage function (it joins the process group),
    without the engine's bookkeeping: rank 0 alone takes the lock, counts the attempt and writes
    metrics, accounting and _SUCCESS. An error here exits non-zero, and srun ends the whole step."""
    log = stage_logger(exp.name, f"{name}.rank{rank}")
    stage = exp.stages[name]
    ctx = _context(exp, name, out, fingerprint)
    ctx.log, ctx.rank, ctx.world_size = log, rank, stage.resources.world_size
    ctx.progress = no_progress          # rank 0 reports for the stage
    log.info("rank %d of %d of stage %s: computes, writes nothing", rank, ctx.world_size, name)
    contract.get(stage.kind).run(stage.params, ctx)
    return {}


def _run_array_task(exp: Experiment, name: str, out: Path, fingerprint: str, fresh: bool,
                    job_id: str | None) -> dict:
    """One task of a stage that runs as a job array (resources.array, e.g. hpo's workers). The
    tasks share the stage folder and coordinate through what the kind keeps there (a study); each
    counts its own attempts in tasks/<i>/. The kind returns once the shared work is complete, so
    whichever task returns first marks the stage done; a later one rewrites the same result with
    the cost of every task added up (their job ids are the array's, so sacct sums them too)."""
    stage = exp.stages[name]
    job = executors.job_environment()
    task, tasks = job.task, job.tasks
    job_id = job.job_id if tasks > 1 else job_id
    if fresh and tasks == 1:             # a forced local run; under a scheduler, submit cleaned the folder
        state.clean_stage_dir(out)
    files = StagePaths(out)
    task_dir = files.task(task).folder
    log = stage_logger(exp.name, f"{name}.task{task}" if tasks > 1 else name)
    with safeio.exclusive_lock(files.task(task).run_lock, f"task {task} of stage {exp.name}/{name}"):
        if (state.read_attempts(task_dir).get("attempts") or [{}])[-1].get("status") == "done":
            state.discard_attempts(task_dir)     # that result is complete: this run is a new one
        tries = _begin_attempt(task_dir, fingerprint, job_id, False, log)
        ctx = _context(exp, name, out, fingerprint)
        ctx.log, ctx.task, ctx.num_tasks = log, task, tasks
        record = _base_record(exp, name, job_id, fingerprint)
        log.info("start %s task %d of %d (kind %s, fingerprint %s, job %s, attempt %d)", name, task, tasks,
                 stage.kind, fingerprint, job_id or "-", len(tries["attempts"]))
        started = time.time()
        with _StopOnSigterm() as stopper, _heartbeat(files.task(task).attempts), _sampled(exp, name, log) as sampler:
            try:
                metrics = contract.get(stage.kind).run(stage.params, ctx) or {}
                stopper.disarm()
            except BaseException as err:
                stopper.disarm()
                record.update(sampler.stop())
                ctx.out_dir = task_dir            # this task's attempt record, not the stage's
                _end_failed_attempt(exp, name, err, ctx, record, tries, started)
                raise
        record.update(sampler.stop())
        record.update(_finish(started), status=metrics.pop("status", "done"))
        record.update({k: metrics[k] for k in METRIC_COLUMNS if k in metrics}, **ctx.accounting)
        record.update(_close_attempt(tries, record["status"], record["wall_s"]))
        state.write_attempts(task_dir, tries)
    array = job.array_id if tasks > 1 else None
    with safeio.waiting_lock(files.finish_lock):
        record.update(_all_tasks(out, tasks, array or job_id, list(job.task_ids) if tasks > 1 else [], fingerprint))
        safeio.atomic_write_text(files.config, yaml.safe_dump(
            resolved_stage_config(exp, name, fingerprint), sort_keys=False))
        safeio.atomic_write_json(files.metrics, metrics)
        safeio.atomic_write_json(files.accounting, record)
        state.mark_success(out, fingerprint, record["status"], array or job_id)
    log.info("%s task %d %s in %.1f s; the stage's tasks took %.1f s in all", name, task, record["status"],
             record["attempt_wall_s"], record["wall_s"])
    return record


def _all_tasks(out: Path, tasks: int, stage_job: str | None, task_ids: list[str], fingerprint: str) -> dict:
    """The stage's cost over every array task's attempts at this result: wall time summed, every
    job id (each task's, as accounting names them)."""
    records = [state.read_attempts(t.folder) for t in StagePaths(out).tasks()]
    attempts = [a for r in records if r.get("fingerprint") == fingerprint for a in r.get("attempts", [])]
    job_ids = task_ids + [str(a["job_id"]) for a in attempts if a.get("job_id")]
    return {"wall_s": round(sum(a.get("wall_s") or 0.0 for a in attempts), 3), "array_tasks": tasks,
            "job_ids": list(dict.fromkeys(job_ids)), "job_id": stage_job, "attempts": len(attempts)}


def check_upstream(exp: Experiment, name: str, fps: dict) -> None:
    """Every needed stage finished with the current config, and its outputs match their checksums."""
    for dep in exp.stages[name].needs:
        dep_dir = exp.stage_dir(dep)
        if not state.is_done(dep_dir, fps[dep]):
            raise UpstreamNotDone(
                f"stage {name!r} needs {dep!r}, which has not finished with the current config "
                f"({state.explain(dep_dir, fps[dep])}); run or submit {dep!r} first")
        problems = state.artifact_problems(dep_dir, full=True)
        if problems:
            state.mark_corrupt(dep_dir, problems[0])
            raise UpstreamNotDone(f"{problems[0]}; stage {dep!r} is now marked corrupt: rerun it and what "
                                  "follows with `python -m pipeline submit all`")


def _end_failed_attempt(exp: Experiment, name: str, err: BaseException, ctx: StageContext, record: dict,
                        tries: dict, started: float) -> None:
    """Record an attempt that did not finish: interrupted ones resume later, failed ones start clean."""
    interrupted = isinstance(err, (SystemExit, KeyboardInterrupt, StageStopped)) or \
        type(err).__name__ in _INTERRUPTION_NAMES
    status = "interrupted" if interrupted else "failed"
    if isinstance(err, UpstreamError):
        state.mark_corrupt(exp.stage_dir(err.stage), str(err))
    record.update(_finish(started), status=status, error=f"{type(err).__name__}: {err}")
    record.update(_close_attempt(tries, status, record["wall_s"]))
    try:
        state.write_attempts(ctx.out_dir, tries)
        safeio.atomic_write_json(StagePaths(ctx.out_dir).accounting, {**record, **ctx.accounting})
    except OSError as write_err:  # e.g. a full disk: do not hide the stage's own error behind this one
        ctx.log.error("could not record the attempt: %s", write_err)
    if interrupted:
        ctx.log.warning("stage %s interrupted (%s); a rerun resumes from its checkpoint", name, type(err).__name__)
    elif isinstance(err, UpstreamError):
        ctx.log.error("stage %s failed: %s", name, err)
    else:
        ctx.log.error("stage %s failed:\n%s", name, traceback.format_exc())


def _begin_attempt(out: Path, fingerprint: str, job_id: str | None, fresh: bool, log) -> dict:
    """Open a new attempt; keep the outputs only when the previous attempt was interrupted."""
    prior = state.read_attempts(out)
    same = prior.get("fingerprint") == fingerprint and not fresh
    attempts = prior.get("attempts", []) if same else []
    if attempts and attempts[-1].get("status") == "running":
        _close_killed(attempts[-1], out)
    if attempts and attempts[-1].get("status") in ("interrupted", "killed"):
        log.info("resuming: attempt %d of this result follows an interrupted one", len(attempts) + 1)
    else:
        removed = state.clean_stage_dir(out)
        if removed:
            why = "--force or an upstream rerun" if fresh else "the earlier run failed or had another fingerprint"
            log.info("starting clean (%s): removed %s", why, ", ".join(removed))
    attempts.append({"attempt": len(attempts) + 1, "job_id": job_id, "step_id": executors.job_environment().step_id,
                     "started_at": safeio.now_iso(), "started": time.time(), "status": "running"})
    tries = {"fingerprint": fingerprint, "attempts": attempts}
    state.write_attempts(out, tries)
    return tries


def _close_killed(attempt: dict, out: Path) -> None:
    """An attempt that ended without a word (kill -9, node failure): its end is the last sign of
    life in the stage folder (the heartbeat keeps attempts.json fresh), a lower bound."""
    last = max((p.stat().st_mtime for p in out.iterdir() if p.is_file()), default=attempt["started"])
    attempt.update(status="killed", wall_s=round(max(0.0, last - attempt["started"]), 3), wall_estimated=True)


def _close_attempt(tries: dict, status: str, wall_s: float) -> dict:
    """Close the newest attempt; return the totals over every attempt of this result
    (wall_s: all attempts; attempt_wall_s: this one)."""
    tries["attempts"][-1].update(status=status, wall_s=wall_s, ended_at=safeio.now_iso())
    attempts = tries["attempts"]
    job_ids = list(dict.fromkeys(str(a["job_id"]) for a in attempts if a.get("job_id")))
    return {"attempts": len(attempts), "job_ids": job_ids, "attempt_wall_s": wall_s,
            "wall_s": round(sum(a.get("wall_s") or 0.0 for a in attempts), 3),
            "attempt_log": [{k: v for k, v in a.items() if k != "started"} for a in attempts]}


def _record_job(out: Path, job_id: str | None, fingerprint: str) -> None:
    """A stage started inside a job nobody recorded (a rendered one-allocation sbatch file): record
    it, so status shows its job id and log. A job that `submit` recorded, as the current one or as
    one it has since replaced, is never recorded again: only submit decides which job is current
    (a job starting just as a newer submit recorded its replacement would otherwise make itself
    current again, and `reconcile` would cancel the live replacement as superseded)."""
    if not job_id or str(job_id) in state.all_job_ids(out):
        return
    job = executors.job_environment()
    executor = job.executor if job.job_id == str(job_id) else "local"
    state.write_job_record(out, {"job_id": str(job_id), "executor": executor, "fingerprint": fingerprint,
                                 "log": os.environ.get("PIPELINE_LOG"), "step_id": job.step_id,
                                 "state": "running", "cached": False})


class _StopOnSigterm:
    """While a stage works, SIGTERM stops it (StageStopped) instead of being ignored or killing the
    process mid-write: a cancelled stage is never marked done unless its work had completed before
    the signal arrived. (submitit's own handler only logs SIGTERM and lets the work go on.)"""

    def __enter__(self):
        self.armed, self.received = True, False
        self.installed = threading.current_thread() is threading.main_thread()
        if self.installed:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        global SIGTERM_RECEIVED
        SIGTERM_RECEIVED = self.received = True
        print(f"[pipeline] SIGTERM received{'' if self.armed else ' after the stage finished its work'}",
              flush=True)
        if self.armed:
            self.armed = False
            raise StageStopped("SIGTERM (scancel, or the job's end)")

    def disarm(self) -> None:
        self.armed = False

    def __exit__(self, *exc):
        if self.installed:
            signal.signal(signal.SIGTERM, self.previous)
        return False


@contextlib.contextmanager
def _sampled(exp: Experiment, name: str, log):
    """The stage's sampler (pipeline/accounting/samplers.py) while it runs. With sampler.stop_idle,
    an idle stage is stopped: the sampler thread raises IdleStop in the stage's (main) thread,
    which the runner records as a failed attempt with the sampler's reason."""
    settings = build(SamplerSettings, exp.raw.get("sampler"), "sampler")
    with (_IdleStopper() if settings.stop_idle else contextlib.nullcontext()) as stopper:
        if stopper and not stopper.installed:
            log.warning("sampler.stop_idle: this stage runs outside the main thread; an idle stage is "
                        "flagged, not stopped")
        with Sampler(settings, exp.stages[name].resources.gpus, log, on_idle=stopper.stop if stopper else None) \
                as sampler:
            yield sampler


_IDLE_SIGNAL = signal.SIGRTMIN + 3


class _IdleStopper:
    """Raise IdleStop in the main thread from the sampler's thread: a signal sent to the main thread
    alone (a real one, so a stage blocked waiting on a child process or sleeping wakes up; the
    child of a `command` stage is killed by subprocess as the exception passes). A real-time
    signal: USR1 and USR2 are the batch system's time-limit warnings (steps.py, submitit)."""

    def __enter__(self):
        self.reason = None
        self.installed = threading.current_thread() is threading.main_thread()
        if self.installed:
            self.previous = signal.signal(_IDLE_SIGNAL, self._handle)
        return self

    def stop(self, reason: str) -> None:
        if self.installed and self.reason is None:
            self.reason = reason
            signal.pthread_kill(threading.main_thread().ident, _IDLE_SIGNAL)

    def _handle(self, signum, frame):
        if self.reason is not None:
            raise IdleStop(f"stopped idle (sampler.stop_idle): {self.reason}")

    def __exit__(self, *exc):
        if self.installed:
            signal.signal(_IDLE_SIGNAL, self.previous)
        return False


SIGTERM_RECEIVED = False   # set once a stage of this process got SIGTERM: `run all` starts no more


def _heartbeat(path: Path, every_s: float = 15.0):
    """Touch `path` every few seconds while a stage runs: if the process is killed without a
    chance to write (kill -9), the next attempt still knows about when it died."""
    return safeio.heartbeat(path, every_s)


def plan_run(exp: Experiment, targets: list[str], force: bool = False,
             fps: dict | None = None) -> list[tuple[str, bool]]:
    """(stage, fresh) for every selected stage that must run, in order; done ones are skipped
    unless forced. A forced stage, and any stage whose upstream reruns here, starts clean."""
    fps = fps or fingerprints(exp)
    forced_stages = forced(exp.stages, targets) if force else set()
    to_run: list[tuple[str, bool]] = []
    names: set[str] = set()
    for name in select(exp.stages, targets):
        fresh = name in forced_stages or any(d in names for d in exp.stages[name].needs)
        if not fresh and state.is_done(exp.stage_dir(name), fps[name]):
            print(f"[pipeline] {name}: up to date, skipped", flush=True)
            continue
        names.add(name)
        to_run.append((name, fresh))
    return to_run


def submit_host_stages_missing(exp: Experiment, targets: list[str], force: bool = False) -> list[str]:
    """Inside a batch job: the selected `where: submit_host` stages that are not done (or forced),
    which this job must not run (its node may have no internet). Elsewhere: none."""
    if executors.job_environment().executor == "local":
        return []
    fps = fingerprints(exp)
    return [n for n in select(exp.stages, targets) if exp.stages[n].on_submit_host
            and (force or not state.is_done(exp.stage_dir(n), fps[n]))]


def run_targets(exp: Experiment, targets: list[str], force: bool = False) -> int:
    """Run the selected stages in order (see plan_run). Returns an exit code."""
    fps = fingerprints(exp)
    job_id = executors.job_environment().job_id
    for name, fresh in plan_run(exp, targets, force, fps):
        try:
            run_stage(exp, name, job_id, fps=fps, fresh=fresh)
        except (Exception, StageStopped) as err:  # the traceback is already in the log
            why = state.describe_os_error(err) if isinstance(err, OSError) else err
            print(f"[pipeline] {name} failed: {why}; later stages not run", file=sys.stderr, flush=True)
            return 1
        if SIGTERM_RECEIVED:
            print("[pipeline] SIGTERM received: later stages not run", file=sys.stderr, flush=True)
            return 1
    return 0


def _context(exp: Experiment, name: str, out: Path, fingerprint: str) -> StageContext:
    stage = exp.stages[name]
    return StageContext(
        experiment=exp.name, stage=name, out_dir=out,
        upstream={d: exp.stage_dir(d) for d in stage.needs},
        data_dir=Path(exp.paths.data), cache_dir=Path(exp.paths.cache), seed=exp.seed,
        device="cuda" if stage.resources.gpus > 0 else "cpu",
        log=stage_logger(exp.name, name), accounting={}, fingerprint=fingerprint,
        world_size=stage.resources.world_size, progress=ProgressWriter(StagePaths(out).progress))


def _base_record(exp: Experiment, name: str, job_id: str | None, fingerprint: str) -> dict:
    stage = exp.stages[name]
    job = executors.job_environment()
    return {
        "experiment": exp.name, "stage": name, "kind": stage.kind, "job_id": job_id, "step_id": job.step_id,
        "node": job.node or socket.gethostname(),
        "partition": job.partition or stage.resources.partition,
        # a batch job, the submit host (`where: submit_host`: submit ran it there), or a local run
        "ran_on": "job" if job.executor != "local" else "submit_host" if stage.on_submit_host else "local",
        "device": "cuda" if stage.resources.gpus > 0 else "cpu",
        "num_devices": stage.resources.world_size if stage.resources.world_size > 1 else stage.resources.gpus,
        "world_size": stage.resources.world_size,
        "cpus": job.cpus or len(os.sched_getaffinity(0)),
        "seed": exp.seed, "config_hash": fingerprint, "git_rev": git_rev(),
        "started_at": safeio.now_iso(),
    }


def _finish(started: float) -> dict:
    # ru_maxrss is in KiB on Linux; it is the process peak so far (a `run all` job shares one), or
    # that of its largest child process (a `command` stage's program) if that was larger.
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"wall_s": round(time.time() - started, 3), "finished_at": safeio.now_iso(),
            "peak_rss_mb": round(peak / 1024, 1)}


@functools.lru_cache(maxsize=1)   # once per process: a `run all` of 1,000 stages asked git 2,000 times
def git_rev() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_in_job(resolved: dict, stage: str) -> dict:
    """What a queued job runs (the executors' `entry`): the stage of this resolved config, under
    the job id the scheduler's accounting knows it by."""
    return run_stage(from_raw(resolved), stage, job_id=executors.job_environment().job_id)
