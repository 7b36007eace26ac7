"""A test backend: one module that implements the executor interface, registered by one line.

`ThreadExecutor` queues each stage as a job that a thread starts once the jobs it waits for have
succeeded, running `python -m pipeline run <stage>` as a child process, as a batch system would;
it answers `live`, `accounting` and `cancel` from its own job table. Nothing else in the engine
knows it: tests/pipeline/executors/test_base.py runs the quickstart through it end to end.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time

import yaml

from pipeline.core.paths import resolved_config
from pipeline.executors.base import After, Executor, LiveJob, Submission, UsageRequest
from safeio import atomic_write_text


class ThreadExecutor(Executor):
    name = "threads"
    title = "threads"
    queues_jobs = True
    jobs: dict[str, dict] = {}            # job id -> its record; shared: `backend(name)` makes new instances
    _ids = itertools.count(1)
    _lock = threading.Lock()

    def submit(self, exp, stage: str, after: After = After()) -> Submission:
        job_id = f"t{next(self._ids)}"
        resolved = resolved_config(exp.paths.results, exp.name, exp.variant)
        atomic_write_text(resolved, yaml.safe_dump(exp.raw, sort_keys=False))
        log = exp.log_dir(stage) / f"{job_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.jobs[job_id] = {"state": "PENDING", "after": list(after.ok), "after_any": list(after.any),
                                 "elapsed_s": None}
        cmd = [sys.executable, "-m", "pipeline", "run", stage, "-c", str(resolved)]
        threading.Thread(target=self._run, args=(job_id, cmd, log), daemon=True).start()
        return Submission(stage, job_id, log, "submitted")

    def _run(self, job_id: str, cmd: list[str], log) -> None:
        job = self.jobs[job_id]
        while True:     # like a scheduler: a job behind a failed one waits until it is cancelled
            with self._lock:     # cancel() changes the state under the same lock
                if job["state"] == "CANCELLED":
                    return
                upstream = [self.jobs[j]["state"] for j in job["after"]]
                ended = all(self.jobs[j]["state"] in ("COMPLETED", "FAILED", "CANCELLED") for j in job["after_any"])
                if ended and all(s == "COMPLETED" for s in upstream):
                    job["state"] = "RUNNING"
                    break
                if any(s in ("FAILED", "CANCELLED", "NEVER") for s in upstream):
                    job["state"] = "NEVER"
            time.sleep(0.1)
        started = time.time()
        with open(log, "w") as out:
            code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PIPELINE_JOB_ID": job_id})
        job.update(state="COMPLETED" if code == 0 else "FAILED", elapsed_s=round(time.time() - started, 3))

    def live(self, job_ids: list[str]) -> dict[str, LiveJob]:
        out = {}
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job and job["state"] in ("PENDING", "NEVER"):
                open_deps = tuple(j for j in job["after"] if self.jobs[j]["state"] != "COMPLETED")
                out[job_id] = LiveJob("pending", "Dependency", on_dependency=bool(job["after"]),
                                      never_starts=job["state"] == "NEVER", waits_on=open_deps)
            elif job and job["state"] == "RUNNING":
                out[job_id] = LiveJob("running", "RUNNING")
        return out

    def accounting(self, requests: list[UsageRequest]) -> tuple[list[dict | None], str | None]:
        return [self._usage(r) for r in requests], None

    def _usage(self, request: UsageRequest) -> dict | None:
        jobs = [self.jobs[j] for j in request.job_ids if j in self.jobs]
        if not jobs:
            return None
        last = jobs[-1]
        failed = last["state"] in ("FAILED", "CANCELLED")
        current = self.jobs.get(str(request.current), last)
        return {"state": last["state"], "ended": last["state"] in ("COMPLETED", "FAILED", "CANCELLED"),
                "failed": failed, "attempts": len(jobs), "elapsed_s": sum(j["elapsed_s"] or 0.0 for j in jobs),
                "totalcpu_s": None, "core_s": None, "maxrss_task_mb": None, "maxrss_step_mb": None,
                "current": {"state": current["state"], "failed": current["state"] in ("FAILED", "CANCELLED"),
                            "live": {"PENDING": "pending", "RUNNING": "running"}.get(current["state"]),
                            "said": f"threads: {current['state']}"}}

    def cancel(self, job_ids: list[str]) -> None:
        with self._lock:      # a queued job ends at once; a running one is left to finish (test jobs are short)
            for job_id in job_ids:
                if self.jobs.get(job_id, {}).get("state") in ("PENDING", "NEVER"):
                    self.jobs[job_id]["state"] = "CANCELLED"
