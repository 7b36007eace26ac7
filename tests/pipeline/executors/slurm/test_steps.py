"""A rendered sbatch file runs the whole DAG in one allocation, each stage as its own job step, and
efficiency.csv charges each stage its own step (issue 9, item 13); the driver's failure and
requeue handling; `--as-steps` outside SLURM."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import config
from pipeline.executors.slurm import steps
from pipeline.executors.slurm.sacct import parse_duration
from pipeline.runner import plan_run, run_targets
from tests.support.cli import REPO, checkout, cli, sets
from tests.support.cluster import (
    sacct,
    squeue_state,
    wait_for_jobs,
    wait_for_requeued_start,
    wait_sacct_final,
    wait_until,
)
from tests.support.results import efficiency

STAGES = ["download", "preprocess", "train", "evaluate", "report"]

SMALL = """
name: alloc
resources: {time: "00:05:00", cpus_per_task: 1, mem: 500M}
stages:
  first:
    kind: command
    argv: [python, -c, "print('first ran')"]
  slow:
    kind: command
    needs: [first]
    # first attempt: leaves a mark and sleeps (until USR1 stops it); later attempts end at once
    argv: [python, -c, "import os, sys, time; m = os.environ['MARK']; sys.exit(0) if os.path.exists(m)
           else (open(m, 'w').close(), print('slow started', flush=True), time.sleep(120))"]
    env: {MARK: MARKER}
    resources: {cpus_per_task: 2}
  last:
    kind: command
    needs: [slow]
    argv: [python, -c, "import sys; print('last ran'); sys.exit(LAST_EXIT)"]
"""


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m pipeline ...` in the copied checkout (the code the job ran)."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"pipeline {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _render(root: Path, config_path: str, overrides: list[str]) -> Path:
    out = root / "job.sbatch"
    _cli(root, "render", "-c", config_path, "-o", str(out), *sets(overrides))
    return out


def _attempts(job: str) -> dict[str, list[dict]]:
    """Every attempt of `job` and of its steps (JobID -> rows with JobName, State, elapsed_s); once
    wait_sacct_final has seen it end."""
    rows: dict[str, list[dict]] = {}
    for r in sacct([job], ["JobID", "JobName", "State", "Elapsed"], steps=True, every_attempt=True):
        rows.setdefault(r["JobID"], []).append({"name": r["JobName"], "state": r["State"],
                                                "elapsed_s": parse_duration(r["Elapsed"])})
    return rows


@pytest.mark.slurm
def test_committed_quickstart_sbatch_runs_each_stage_as_its_own_step(slurm, tmp_path):
    """`sbatch sbatch/quickstart.sbatch` from a checkout, as a user runs it: every stage in one
    allocation, each its own job step. The checkout has no logs/ folder: the job creates it and
    still logs there (SLURM itself would not create the folder of an --output path). The
    committed file is the rendered one (tests/pipeline/executors/slurm/test_render.py keeps them in sync)."""
    root = checkout(tmp_path)
    shutil.copytree(REPO / "sbatch", root / "sbatch")
    assert not (root / "logs").exists()
    overrides = [f"paths.{k}={root / k}" for k in ("results", "logs", "data", "cache")]
    proc = subprocess.run(["sbatch", "--parsable", "--wait", "sbatch/quickstart.sbatch"], cwd=root,
                          capture_output=True, text=True, timeout=480)
    job = proc.stdout.strip().split(";")[0]
    log = root / "logs" / f"quickstart-{job}.out"
    assert proc.returncode == 0, log.read_text() if log.exists() else proc.stderr
    assert (root / f"slurm-{job}.out").read_text() == f"log: {log}\n"
    text = log.read_text()
    assert "Epoch 1/15 | Train Loss:" in text and "[pipeline] train: job step quickstart.train of job" in text

    assert wait_sacct_final([job]) == {job: "COMPLETED"}      # `report` reads sacct too
    attempts = _attempts(job)
    assert [attempts[f"{job}.{i}"][0]["name"] for i in range(5)] == [f"quickstart.{s}" for s in STAGES]
    assert all(attempts[f"{job}.{i}"][0]["state"] == "COMPLETED" for i in range(5))
    assert f"{job}.5" not in attempts

    _cli(root, "report", "-c", "configs/quickstart.yaml", *sets(overrides))
    rows = efficiency(root / "results")
    assert list(rows) == STAGES
    assert {rows[s]["job_id"] for s in STAGES} == {job}
    assert [rows[s]["step_id"] for s in STAGES] == ["0", "1", "2", "3", "4"]
    for i, stage in enumerate(STAGES):     # each row: its own step, not the whole allocation
        assert float(rows[stage]["sacct_elapsed_s"]) == attempts[f"{job}.{i}"][0]["elapsed_s"], stage
        assert rows[stage]["sacct_state"] == "COMPLETED" and rows[stage]["sacct_attempts"] == "1"
        assert rows[stage]["sacct_totalcpu_s"] != "" and rows[stage]["cpus"] == "2"
    whole = attempts[job][0]["elapsed_s"]
    assert sum(float(rows[s]["sacct_elapsed_s"]) for s in STAGES) <= whole
    assert float(rows["train"]["sacct_elapsed_s"]) > float(rows["download"]["sacct_elapsed_s"])
    assert float(rows["evaluate"]["test_acc"]) >= 0.95

    states = {r["stage"]: r for r in json.loads(_cli(root, "status", "-c", "configs/quickstart.yaml", "--json",
                                                    *sets(overrides)).stdout)}
    for stage in STAGES:
        assert states[stage]["state"] == "done" and states[stage]["job_id"] == job, states[stage]
        assert states[stage]["log"] == str(log), states[stage]


@pytest.mark.slurm
def test_failed_step_stops_the_job_and_usr1_requeues_and_resumes(slurm, tmp_path):
    """A stage that fails ends the job (FAILED) with no later step; USR1 before the time limit
    stops the running step, requeues the job, and the stage resumes in the next attempt, where
    efficiency.csv sums both of its steps."""
    root = checkout(tmp_path)
    cfg = root / "alloc.yaml"
    marker = tmp_path / "marker"
    cfg.write_text(SMALL.replace("MARKER", str(marker)).replace("LAST_EXIT", "3"))
    overrides = [f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}"]
    failing = subprocess.run(["sbatch", "--parsable", str(_render(root, str(cfg), overrides))], cwd=root,
                             capture_output=True, text=True, check=True).stdout.strip()
    log = root / "logs" / f"alloc-{failing}.out"
    wait_until(lambda: log.exists() and "slow started" in log.read_text(), 120)
    subprocess.run(["scancel", "--signal=USR1", "--batch", failing], check=True)
    wait_until(lambda: "PENDING" in squeue_state(failing) or not squeue_state(failing), 60)
    # Start the requeued attempt early, but only once the old attempt's step has ended and not in
    # the second of the requeue (see wait_for_requeued_start): slurmd refuses to launch a job it
    # still counts as killed, which fails the attempt. SLURM's own requeue delay covers this.
    wait_until(lambda: not _live_steps(failing), 60)
    wait_for_requeued_start(log, failing, line="later stages not run", count=1)
    wait_for_jobs([failing], timeout=180)

    text = log.read_text()
    assert "stopping the running step, requeueing job" in text and "[pipeline] first: up to date, skipped" in text
    assert "slow interrupted (SystemExit)" in text and "resuming: attempt 2 of this result" in text
    assert "command 'python' exited with code 3" in text
    assert "last failed (step exit code 1); later stages not run" in text
    assert wait_sacct_final([failing]) == {failing: "FAILED"}
    attempts = _attempts(failing)
    assert [a["state"].split()[0] for a in attempts[failing]] == ["REQUEUED", "FAILED"]
    names = [a["name"] for key, tries in attempts.items() if key.partition(".")[2].isdigit() for a in tries]
    assert sorted(names) == ["alloc.first", "alloc.last", "alloc.slow", "alloc.slow"]

    _cli(root, "report", "-c", str(cfg), *sets(overrides))
    rows = efficiency(tmp_path / "results")
    slow = rows["slow"]
    assert slow["status"] == "done" and slow["attempts"] == "2" and slow["sacct_attempts"] == "2"
    steps_elapsed = [a["elapsed_s"] for k, v in attempts.items() if k.startswith(f"{failing}.") for a in v
                     if a["name"] == "alloc.slow"]
    assert float(slow["sacct_elapsed_s"]) == sum(steps_elapsed)
    assert rows["first"]["sacct_attempts"] == "1" and rows["last"]["status"] == "failed"
    assert json.loads((tmp_path / "results" / "alloc" / "slow" / "accounting.json").read_text())["job_ids"] == [failing]


def _live_steps(job: str) -> str:
    """Steps of `job` still running, as squeue or sacct (every attempt) see them."""
    queued = subprocess.run(["squeue", "-h", "-s", "-j", job, "-o", "%i"], capture_output=True, text=True).stdout
    running = [r["JobID"] for r in sacct([job], ["JobID", "State"], steps=True, every_attempt=True)
               if "." in r["JobID"] and r["State"].startswith(("RUNNING", "COMPLETING"))]
    return (queued.strip() + "\n".join(running)).strip()


def test_as_steps_outside_slurm_runs_in_this_process(tmp_path):
    cfg = tmp_path / "alloc.yaml"
    cfg.write_text(SMALL.replace("MARKER", str(tmp_path / "marker")).replace("LAST_EXIT", "0"))
    (tmp_path / "marker").touch()   # the slow stage returns at once
    env = {"SLURM_JOB_ID": "", "SLURM_STEP_ID": ""}
    proc = cli("run", "all", "--as-steps", "-c", str(cfg), "--set", f"paths.results={tmp_path / 'results'}",
               env=env)
    assert "first ran" in proc.stdout and "last ran" in proc.stdout and "job step" not in proc.stdout
    assert all((tmp_path / "results" / "alloc" / s / "_SUCCESS").exists() for s in ("first", "slow", "last"))


def test_driver_plan_and_step_commands(tmp_path):
    cfg = tmp_path / "alloc.yaml"
    cfg.write_text(SMALL)
    exp = config.load(cfg, [f"paths.results={tmp_path / 'results'}"])
    # what `run_targets` would run; a stage after one that reruns here starts clean (--force)
    assert plan_run(exp, ["all"]) == [("first", False), ("slow", True), ("last", True)]
    assert plan_run(exp, ["slow"], force=True) == [("first", False), ("slow", True)]
    assert run_targets(exp, ["first"]) == 0
    assert plan_run(exp, ["all"]) == [("slow", False), ("last", True)]
    cmd = steps.step_command(exp, "slow", "c.yaml", ["a=1"], fresh=True, env={"SLURM_CPUS_PER_TASK": "1"})
    assert cmd[:6] == ["srun", "--ntasks=1", "--nodes=1", "--cpus-per-task=1", "--job-name=alloc.slow",
                       "--kill-on-bad-exit=1"]
    assert cmd[7:] == ["-m", "pipeline", "run", "slow", "-c", "c.yaml", "--set", "a=1", "--force"]
    assert "--cpus-per-task=2" in steps.step_command(exp, "slow", "c.yaml", [], False, env={})
    assert steps.inside_allocation({"SLURM_JOB_ID": "7"})
    assert steps.inside_allocation({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "batch"})
    assert not steps.inside_allocation({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0"})
    assert not steps.inside_allocation({"SLURM_JOB_ID": "7", "PIPELINE_AS_STEP": "1"})
    assert not steps.inside_allocation({})
