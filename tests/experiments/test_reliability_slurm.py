"""Issue 9 on the real local SLURM cluster: jobs never left waiting forever, and the one rule for
cancelled stages (done only if the stage's work completed before the cancel arrived)."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.cli import cli, job_ids_from_table, sets, status_json
from tests.support.cluster import wait_for_jobs, wait_for_line, wait_sacct_final
from tests.support.experiments import FAILING_CHAIN, write_experiment

pytestmark = pytest.mark.slurm
QUICKSTART = "configs/quickstart.yaml"


def test_resubmit_cancels_superseded_jobs_and_wait_leaves_nothing_stuck(slurm, tmp_path):
    config = write_experiment(tmp_path, FAILING_CHAIN, "breaks.yaml")
    overrides = sets([f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}"])
    first = job_ids_from_table(cli("submit", "all", "-c", str(config), "--executor", "slurm", *overrides).stdout)
    wait_for_jobs(list(first.values()), timeout=120, allow_stuck=True)
    # boom failed; `after` and `last` wait forever. A second submit resubmits them: the old ones
    # are cancelled, not forgotten, and --wait does not return while any job can never start.
    proc = cli("submit", "all", "-c", str(config), "--executor", "slurm", "--wait", *overrides, check=False)
    assert proc.returncode == 1
    assert f"after: cancelled its earlier queued job(s) {first['after']}" in proc.stdout
    assert f"last: cancelled its earlier queued job(s) {first['last']}" in proc.stdout
    second = {r["stage"]: r["job_id"] for r in status_json(str(config), overrides[1::2]).values()}
    assert second["after"] != first["after"] and "upstream stage 'boom' failed" in proc.stdout
    history = json.loads((tmp_path / "results" / "breaks" / "after" / "job.json").read_text())["history"]
    assert [h["job_id"] for h in history] == [first["after"], second["after"]]
    every_id = [*first.values(), *second.values()]
    live = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert not set(live) & set(every_id)
    cancelled = [first["after"], first["last"], second["after"], second["last"]]
    assert wait_sacct_final(cancelled) == {job: "CANCELLED" for job in cancelled}
    assert "nothing to reconcile" in cli("reconcile", "-c", str(config), *overrides).stdout


def test_cancelled_stage_is_not_done_and_its_resume_costs_both_attempts(slurm, tmp_path):
    overrides = [f"paths.{k}={tmp_path / k}" for k in ("results", "logs", "data", "cache")]
    overrides += ["stages.train.epochs=40", "stages.train.patience=0"]
    cli("run", "preprocess", "-c", QUICKSTART, *sets(overrides))
    ids = job_ids_from_table(cli("submit", "train", "-c", QUICKSTART, "--executor", "slurm", *sets(overrides)).stdout)
    job = ids["train"]
    logs = tmp_path / "logs" / "quickstart" / "train"
    log = wait_for_line(lambda: logs.glob(f"{job}_*log.out"), "Epoch 2/40")
    subprocess.run(["scancel", job], check=True)
    wait_for_jobs([job], timeout=120)
    train = tmp_path / "results" / "quickstart" / "train"
    assert not (train / "_SUCCESS").exists()
    assert "SIGTERM received" in log.read_text() and "Epoch 40/40" not in log.read_text()
    acct = json.loads((train / "accounting.json").read_text())
    assert acct["status"] == "interrupted" and "StageStopped" in acct["error"]
    state = status_json(QUICKSTART, overrides)["train"]
    assert state["state"] == "interrupted" and state["job_id"] == job and "the next submit resumes it" in state["reason"]
    assert wait_sacct_final([job]) == {job: "CANCELLED"}
    # The next submit resumes the interrupted run; accounting covers both jobs.
    proc = cli("submit", "train", "-c", QUICKSTART, "--executor", "slurm", "--wait", *sets(overrides))
    again = job_ids_from_table(proc.stdout)["train"]
    assert status_json(QUICKSTART, overrides)["train"]["state"] == "done"
    text = next(logs.glob(f"{again}_*log.out")).read_text()
    assert "resuming: attempt 2" in text and "Epoch 1/40" not in text
    acct = json.loads((train / "accounting.json").read_text())
    assert acct["attempts"] == 2 and acct["job_ids"] == [job, again] and acct["epochs"] == 40
    assert acct["wall_s"] > acct["attempt_wall_s"]
