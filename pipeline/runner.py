"""Run stages in this process: what SLURM jobs, the local executor and tests all call."""
from __future__ import annotations

import logging
import os
import resource
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import yaml

from . import registry, state
from .config import REPO_ROOT, Experiment
from .dag import forced, select
from .registry import StageContext

# Metrics a stage returns that become efficiency.csv columns of the same name.
METRIC_COLUMNS = ("val_acc", "test_acc", "macro_precision", "macro_recall", "macro_f1")


class UpstreamNotDone(RuntimeError):
    pass


def stage_logger(exp: str, stage: str) -> logging.Logger:
    log = logging.getLogger(f"{exp}.{stage}")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s | %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def run_stage(exp: Experiment, name: str, job_id: str | None = None) -> dict:
    """Run one stage; write metrics.json, accounting.json, config.yaml, then _SUCCESS last."""
    stage = exp.stages[name]
    fps = state.fingerprints(exp)
    for dep in stage.needs:
        if not state.is_done(exp.stage_dir(dep), fps[dep]):
            raise UpstreamNotDone(
                f"stage {name!r} needs {dep!r}, which has not finished with the current config "
                f"({state.explain(exp.stage_dir(dep), fps[dep])}); run or submit {dep!r} first")
    out = exp.stage_dir(name)
    with state.exclusive_lock(out / ".run.lock", f"a run of stage {exp.name}/{name}"):
        state.clear_success(out)  # from here on the stage is not done until it says so
        state.atomic_write_text(out / "config.yaml", yaml.safe_dump(
            {"stage": name, "fingerprint": fps[name], "experiment": exp.raw}, sort_keys=False))
        ctx = _context(exp, name, out, fps[name])
        record = _base_record(exp, name, job_id, fps[name])
        ctx.log.info("start %s (kind %s, fingerprint %s, job %s)", name, stage.kind, fps[name], job_id or "-")
        started = time.time()
        try:
            metrics = registry.get(stage.kind).run(stage.params, ctx) or {}
        except (SystemExit, KeyboardInterrupt) as err:
            # Preemption/time-limit requeue (submitit exits on USR2) or Ctrl-C: not a failure.
            record.update(_finish(started), status="interrupted", error=f"{type(err).__name__}: {err}")
            state.atomic_write_json(out / "accounting.json", {**record, **ctx.accounting})
            ctx.log.warning("stage %s interrupted (%s); a rerun resumes from its checkpoint", name, type(err).__name__)
            raise
        except BaseException as err:
            record.update(_finish(started), status="failed", error=f"{type(err).__name__}: {err}")
            state.atomic_write_json(out / "accounting.json", {**record, **ctx.accounting})
            ctx.log.error("stage %s failed:\n%s", name, traceback.format_exc())
            raise
        status = metrics.pop("status", "done")
        record.update(_finish(started), status=status, skip_reason=metrics.pop("skip_reason", None))
        record.update({k: metrics[k] for k in METRIC_COLUMNS if k in metrics})
        record.update(ctx.accounting)
        state.atomic_write_json(out / "metrics.json", metrics)
        state.atomic_write_json(out / "accounting.json", record)
        state.mark_success(out, fps[name], status, job_id)
        ctx.log.info("%s %s in %.1f s", name, status, record["wall_s"])
        return record


def run_targets(exp: Experiment, targets: list[str], force: bool = False) -> int:
    """Run the selected stages in order; skip done ones unless forced. Returns an exit code."""
    fps = state.fingerprints(exp)
    job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("PIPELINE_JOB_ID")
    rerun: set[str] = set()
    forced_stages = forced(exp.stages, targets) if force else set()
    for name in select(exp.stages, targets):
        upstream_rerun = any(d in rerun for d in exp.stages[name].needs)
        if state.is_done(exp.stage_dir(name), fps[name]) and name not in forced_stages and not upstream_rerun:
            print(f"[pipeline] {name}: up to date, skipped", flush=True)
            continue
        rerun.add(name)
        try:
            run_stage(exp, name, job_id)
        except Exception as err:  # the traceback is already in the log
            print(f"[pipeline] {name} failed: {err}; later stages not run", file=sys.stderr, flush=True)
            return 1
    return 0


def _context(exp: Experiment, name: str, out: Path, fingerprint: str) -> StageContext:
    stage = exp.stages[name]
    return StageContext(
        experiment=exp.name, stage=name, out_dir=out,
        upstream={d: exp.stage_dir(d) for d in stage.needs},
        data_dir=Path(exp.paths.data), cache_dir=Path(exp.paths.cache), seed=exp.seed,
        device="cuda" if stage.resources.gpus > 0 else "cpu",
        log=stage_logger(exp.name, name), accounting={}, fingerprint=fingerprint)


def _base_record(exp: Experiment, name: str, job_id: str | None, fingerprint: str) -> dict:
    stage = exp.stages[name]
    return {
        "experiment": exp.name, "stage": name, "kind": stage.kind, "job_id": job_id,
        "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        "partition": os.environ.get("SLURM_JOB_PARTITION") or stage.resources.partition,
        "device": "cuda" if stage.resources.gpus > 0 else "cpu",
        "num_devices": stage.resources.gpus,
        "cpus": int(os.environ.get("SLURM_CPUS_PER_TASK") or len(os.sched_getaffinity(0))),
        "seed": exp.seed, "config_hash": fingerprint, "git_rev": git_rev(),
        "started_at": state.now_iso(),
    }


def _finish(started: float) -> dict:
    # ru_maxrss is in KiB on Linux; it is the process peak so far (a `run all` job shares one).
    return {"wall_s": round(time.time() - started, 3), "finished_at": state.now_iso(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


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
