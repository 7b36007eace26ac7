"""One allocation, one job step per stage: what a rendered sbatch file runs (`run all --as-steps`).

Inside an allocation, `python -m pipeline run all --as-steps` is a driver: for each selected stage
that is not done, in topological order, it launches `srun ... python -m pipeline run <stage>` and
waits for it. sacct then accounts every stage as its own step (`<job>.<step>`, named
`<experiment>.<stage>`), so efficiency.csv charges each stage what it used, not the whole job.
Outside an allocation (`bash sbatch/x.sbatch` on a laptop), or already inside a step, the stages
run in this process as plain `run` does.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from typing import Callable, Mapping

from pipeline.executors.slurm.env import STEP_ENV, allocation_cpus, in_step, inside_allocation
from pipeline.executors.slurm.executor import requeue
from pipeline.executors.slurm.formats import gpu_request


def step_command(exp, name: str, config_arg: str, overrides: list[str], fresh: bool,
                 env: Mapping[str, str] = os.environ) -> list[str]:
    """The srun line of one stage: as many tasks and nodes as the stage runs processes on
    each with the stage's CPUs capped by the allocation's; memory is not
    asked for, so the step may use the allocation's (sized for the largest stage)."""
    resources = exp.stages[name].resources
    cpus = min(resources.cpus_per_task, allocation_cpus(env) or resources.cpus_per_task)
    cmd = ["srun", f"--ntasks={resources.world_size}", f"--nodes={resources.nodes}", f"--cpus-per-task={cpus}",
           f"--job-name={exp.name}.{name}", "--kill-on-bad-exit=1"]
    cmd += [f"--{k}={v}" for k, v in gpu_request(resources, "gres").items()]
    cmd += [sys.executable, "-m", "pipeline", "run", name, "-c", config_arg]
    cmd += [a for o in overrides for a in ("--set", o)]
    return cmd + (["--force"] if fresh else [])


def run_as_steps(exp, targets: list[str], config_arg: str, overrides: list[str], force: bool,
                 plan: Callable, run_here: Callable) -> int:
    """Run each stage to do as its own job step; a failed step stops the run (exit 1).
    `plan(exp, targets, force)` lists (stage, fresh) as the runner would run them;
    `run_here(exp, targets, force=)` runs them in this process (outside an allocation)."""
    install_usr1_handler(driver=True)   # until the driver installs its own (it stops the step first)
    if not inside_allocation() or shutil.which("srun") is None:
        if os.environ.get("SLURM_JOB_ID"):
            print("[pipeline] --as-steps: not in a batch script with srun; running the stages in this process",
                  flush=True)
        return run_here(exp, targets, force=force)
    driver = _Driver(os.environ["SLURM_JOB_ID"], wait_s=max(1, exp.signal_delay_s // 2))
    signal.signal(signal.SIGUSR1, driver.on_usr1)
    env = {**os.environ, STEP_ENV: "1", "PYTHONUNBUFFERED": "1"}
    for name, fresh in plan(exp, targets, force):
        cmd = step_command(exp, name, config_arg, overrides, fresh)
        print(f"[pipeline] {name}: job step {exp.name}.{name} of job {driver.job_id}: {shlex.join(cmd)}", flush=True)
        rc = driver.run(cmd, env)
        if rc != 0:
            print(f"[pipeline] {name} failed (step exit code {rc}); later stages not run", file=sys.stderr,
                  flush=True)
            return 1
    return 0


class _Driver:
    """Runs one step at a time. On USR1 (SLURM's warning before the time limit, --signal=B:USR1@N,
    which reaches only the batch script) it passes the signal to the running step through srun;
    when the stage has stopped and recorded its interrupted attempt, it requeues the job. A stage
    that does not stop within `wait_s` is requeued anyway (SLURM then ends the step)."""

    def __init__(self, job_id: str, wait_s: float):
        self.job_id, self.wait_s = job_id, wait_s
        self.child: subprocess.Popen | None = None
        self.requeue_asked = False

    def run(self, cmd: list[str], env: dict) -> int:
        self.child = subprocess.Popen(cmd, env=env)
        try:
            code = self.child.wait()
        finally:
            self.child = None
        if self.requeue_asked:
            self.requeue()
        return code

    def on_usr1(self, signum, frame) -> None:
        print(f"[pipeline] time limit near: stopping the running step, requeueing job {self.job_id}", flush=True)
        self.requeue_asked = True
        child = self.child
        if child is None:
            self.requeue()
        child.send_signal(signal.SIGUSR1)   # srun passes it on to the stage process
        # Not child.wait() here: the interrupted wait in `run` holds its lock; `run` requeues.
        timer = threading.Timer(self.wait_s, self._requeue_now)
        timer.daemon = True
        timer.start()

    def _requeue_now(self) -> None:
        print(f"[pipeline] the step did not stop within {self.wait_s}s; requeueing anyway", flush=True)
        requeue(self.job_id)

    def requeue(self) -> None:
        requeue(self.job_id)
        sys.exit(143)


def install_usr1_handler(driver: bool = False) -> None:
    """SLURM sends USR1 before the time limit (--signal=B:USR1@N). In a stage's step: stop the stage
    as interrupted (it resumes after the requeue; the driver outside the step requeues the job once
    the stage has recorded its attempt). In a rendered job's batch script or a plain job: requeue
    the job, so it starts again and resumes from the stages' checkpoints. Elsewhere: nothing."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return
    if in_step() and not driver:
        def handler(signum, frame):
            print("[pipeline] USR1: stopping this stage (interrupted); the job's driver requeues the job", flush=True)
            sys.exit(143)
    else:
        def handler(signum, frame):
            print(f"[pipeline] time limit near: requeueing job {job_id}", flush=True)
            requeue(job_id)
            sys.exit(143)
    signal.signal(signal.SIGUSR1, handler)
