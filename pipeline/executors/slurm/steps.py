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
from typing import Mapping

from pipeline.core.config import Experiment
from pipeline.executors.slurm import executor as slurm

STEP_ENV = "PIPELINE_AS_STEP"          # set for the stage process of a step: the runner records the step id
BATCH_STEP_IDS = ("", "batch", "4294967294")   # SLURM_STEP_ID of the batch script itself (if set at all)


def inside_allocation(env: Mapping[str, str] = os.environ) -> bool:
    """In a SLURM job's batch script (not in a step of it): where steps can be launched."""
    return bool(env.get("SLURM_JOB_ID")) and env.get("SLURM_STEP_ID", "") in BATCH_STEP_IDS \
        and not env.get(STEP_ENV)


def in_step(env: Mapping[str, str] = os.environ) -> bool:
    """This process runs a stage as a step that a driver launched."""
    return bool(env.get(STEP_ENV)) and bool(env.get("SLURM_JOB_ID"))


def plan(exp: Experiment, targets: list[str], force: bool = False) -> list[tuple[str, bool]]:
    """(stage, fresh) for every stage to run, in order: exactly what `run_targets` would run
    (a fresh stage gets `--force` for its step)."""
    from pipeline.runner import plan_run
    return plan_run(exp, targets, force)


def step_command(exp: Experiment, name: str, config_arg: str, overrides: list[str], fresh: bool,
                 env: Mapping[str, str] = os.environ) -> list[str]:
    """The srun line of one stage: as many tasks and nodes as the stage runs processes on
    each with the stage's CPUs capped by the allocation's; memory is not
    asked for, so the step may use the allocation's (sized for the largest stage)."""
    resources = exp.stages[name].resources
    cpus = resources.cpus_per_task
    if (env.get("SLURM_CPUS_PER_TASK") or "").isdigit():
        cpus = min(cpus, int(env["SLURM_CPUS_PER_TASK"]))
    cmd = ["srun", f"--ntasks={resources.world_size}", f"--nodes={resources.nodes}", f"--cpus-per-task={cpus}",
           f"--job-name={exp.name}.{name}", "--kill-on-bad-exit=1"]
    if resources.gpus:
        cmd.append(f"--gres=gpu:{resources.gpus}")
    cmd += [sys.executable, "-m", "pipeline", "run", name, "-c", config_arg]
    cmd += [a for o in overrides for a in ("--set", o)]
    return cmd + (["--force"] if fresh else [])


def run_as_steps(exp: Experiment, targets: list[str], config_arg: str, overrides: list[str],
                 force: bool = False) -> int:
    """Run each stage to do as its own job step; a failed step stops the run (exit 1)."""
    if not inside_allocation() or shutil.which("srun") is None:
        from pipeline.runner import run_targets
        if os.environ.get("SLURM_JOB_ID"):
            print("[pipeline] --as-steps: not in a batch script with srun; running the stages in this process",
                  flush=True)
        return run_targets(exp, targets, force=force)
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
        slurm.requeue(self.job_id)

    def requeue(self) -> None:
        slurm.requeue(self.job_id)
        sys.exit(143)


def stop_on_usr1() -> None:
    """In a stage's step: USR1 stops the stage as interrupted (it resumes after the requeue); the
    driver outside the step requeues the job once the stage has recorded its attempt."""
    def handler(signum, frame):
        print("[pipeline] USR1: stopping this stage (interrupted); the job's driver requeues the job", flush=True)
        sys.exit(143)
    signal.signal(signal.SIGUSR1, handler)
