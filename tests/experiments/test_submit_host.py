"""Stages that run on the submit host (`where: submit_host`, issue 23) on the real local SLURM
cluster: the rendered one-allocation sbatch stops at once while such a stage is not done, naming
the command to run on the login node; `submit` runs it in its own process before queuing what
needs it (no dependency on it: it is done), records where it ran, and a failure there queues
nothing."""
from __future__ import annotations

import json
import socket
import subprocess

import pytest

from tests.support.cli import checkout, cli, job_ids_from_table
from tests.support.cluster import sacct, wait_for_jobs, wait_sacct_final
from tests.support.experiments import write_experiment
from tests.support.results import efficiency

pytestmark = pytest.mark.slurm

FETCHED = """
name: fetched
resources: {time: "00:05:00", cpus_per_task: 1, mem: 500M}
stages:
  fetch:
    kind: command
    where: submit_host
    argv: [python, -c, "print('fetched')"]
  use:
    kind: command
    needs: [fetch]
    argv: [python, -c, "print('used')"]
"""


def _sbatch_wait(root, script) -> tuple[int, str, str]:
    """`sbatch --wait` from the checkout: (exit code, job id, the allocation's log)."""
    proc = subprocess.run(["sbatch", "--parsable", "--wait", str(script)], cwd=root, capture_output=True, text=True,
                          timeout=300)     # the queue may hold it behind other jobs
    job = proc.stdout.strip().split(";")[0]
    return proc.returncode, job, (root / "logs" / f"fetched-{job}.out").read_text()


def test_submit_host_stage_runs_at_submit_and_the_rendered_job_refuses_without_it(slurm, tmp_path):
    root = checkout(tmp_path)
    write_experiment(root, FETCHED)
    results = root / "results" / "fetched"
    cli("render", "-c", "exp.yaml", "-o", "job.sbatch", cwd=root)
    assert "python -m pipeline submit fetch -c exp.yaml" in (root / "job.sbatch").read_text()

    # 1. the one-allocation job while `fetch` is not done: it stops at once, no stage runs
    code, job, log = _sbatch_wait(root, "job.sbatch")
    assert code != 0 and "`python -m pipeline submit fetch -c exp.yaml` on the login node" in log
    assert "No stage was run." in log and not (results / "use").exists()
    assert wait_sacct_final([job]) == {job: "FAILED"}
    assert [r for r in sacct([job], ["JobName"], steps=True) if r["JobName"].startswith("fetched.")] == []

    # 2. `submit fetch` on the login node runs it here and queues nothing; then the job runs the rest
    here = cli("submit", "fetch", "-c", "exp.yaml", "--executor", "slurm", cwd=root).stdout
    assert "runs on the submit host" in here and (results / "fetch" / "_SUCCESS").exists()
    code, job, log = _sbatch_wait(root, "job.sbatch")
    assert code == 0 and "fetch: up to date, skipped" in log and (results / "use" / "_SUCCESS").exists()

    # 3. `submit all --force`: fetch again here (recorded as such), `use` a job with no dependency on it
    out = cli("submit", "all", "-c", "exp.yaml", "--executor", "slurm", "--force", cwd=root).stdout
    jobs = job_ids_from_table(out)
    assert list(jobs) == ["use"] and "local-" in out
    fetch_job = json.loads((results / "fetch" / "job.json").read_text())
    assert fetch_job["executor"] == "local" and fetch_job["state"] == "done"
    script = (root / "logs" / "fetched" / "use" / f"{jobs['use']}_submission.sh").read_text()
    assert "--dependency" not in script
    wait_for_jobs([jobs["use"]], timeout=300)
    acct = json.loads((results / "fetch" / "accounting.json").read_text())
    assert acct["ran_on"] == "submit_host" and acct["node"] == socket.gethostname()
    assert json.loads((results / "use" / "accounting.json").read_text())["ran_on"] == "job"
    wait_sacct_final([jobs["use"]])
    cli("report", "-c", "exp.yaml", cwd=root)
    rows = efficiency(root / "results")
    assert rows["fetch"]["ran_on"] == "submit_host" and rows["use"]["ran_on"] == "job"

    # 4. a submit-host stage that fails: one line with its log, exit 2, and no job queued
    failing = cli("submit", "all", "-c", "exp.yaml", "--executor", "slurm", "--force",
                  "--set", "stages.fetch.argv=[python, -c, 'raise SystemExit(3)']", cwd=root, check=False)
    assert failing.returncode == 2 and "stage 'fetch' failed on the submit host" in failing.stderr
    assert "nothing was queued" in failing.stderr
    assert json.loads((results / "use" / "job.json").read_text())["job_id"] == jobs["use"]    # not resubmitted
