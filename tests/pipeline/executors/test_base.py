"""A new backend is one module plus one line of registration: the quickstart end to end through
tests/support/thread_executor.py, which the engine knows only through the executor interface (submit with
waits, live states, accounting, cancel)."""
from __future__ import annotations

import json
import time

import pytest

from pipeline import executors
from pipeline.core import config
from tests.support.experiments import write_experiment
from tests.support.results import efficiency
from tests.support.thread_executor import ThreadExecutor

CONFIG = "configs/quickstart.yaml"
STAGES = ["download", "preprocess", "train", "evaluate", "report"]


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(executors.BACKENDS, "threads", ThreadExecutor)     # the one line a backend needs
    ThreadExecutor.jobs.clear()


def test_quickstart_runs_end_to_end_on_a_new_backend(registered, workspace, capsys):
    from pipeline.cli.status import stage_states
    from pipeline.cli.submit import submit
    exp = config.load(CONFIG, workspace["overrides"])
    executor = executors.make_executor("threads")
    assert submit(exp, executor, ["all"], wait=True) == 0
    rows = {r["stage"]: r for r in stage_states(exp)}
    assert [rows[s]["state"] for s in STAGES] == ["done"] * 5
    assert all(rows[s]["job_id"].startswith("t") for s in STAGES)
    records = [json.loads((exp.stage_dir(s) / "job.json").read_text()) for s in STAGES]
    assert {r["executor"] for r in records} == {"threads"}
    for s in ("train", "evaluate"):      # each waited for what it needs
        assert records[STAGES.index(s)]["after"] == [rows[n]["job_id"] for n in exp.stages[s].needs]
    metrics = json.loads((exp.stage_dir("evaluate") / "metrics.json").read_text())
    assert metrics["test_acc"] >= 0.95
    csv_rows = efficiency(exp.results_dir.parent)
    assert csv_rows["train"]["sacct_state"] == "COMPLETED" and float(csv_rows["train"]["sacct_elapsed_s"]) > 0


def test_a_failed_stage_leaves_its_dependents_never_run_and_reconcile_cancels_them(registered, workspace, tmp_path):
    from pipeline.cli.status import reconcile, stage_states
    from pipeline.cli.submit import submit
    path = write_experiment(tmp_path, """\
        name: chain
        stages:
          first: {kind: command, argv: ["false"]}
          second: {kind: command, needs: [first], argv: ["true"]}
          third: {kind: command, needs: [second], argv: ["true"]}
        """, "chain.yaml")
    exp = config.load(path, workspace["overrides"], root=tmp_path)
    assert submit(exp, executors.make_executor("threads"), ["all"]) == 0     # queued: returns at once
    jobs = ThreadExecutor.jobs
    deadline = time.time() + 60
    while [j["state"] for j in jobs.values()] != ["FAILED", "NEVER", "NEVER"]:
        assert time.time() < deadline, jobs
        time.sleep(0.1)
    rows = {r["stage"]: r for r in stage_states(exp)}
    assert [rows[s]["state"] for s in ("first", "second", "third")] == ["failed", "never-run", "never-run"]
    assert rows["first"]["reason"] == "threads: FAILED"
    messages = reconcile(exp)
    assert messages == [f"cancelled {s} (job {rows[s]['job_id']}): upstream stage 'first' failed (job "
                        f"{rows['first']['job_id']}, log: {rows['first']['log']})" for s in ("second", "third")]
    assert [j["state"] for j in jobs.values()] == ["FAILED", "CANCELLED", "CANCELLED"]
    after = {r["stage"]: r["state"] for r in stage_states(exp)}       # cancelled before they started
    assert [after[s] for s in ("first", "second", "third")] == ["failed", "never-run", "never-run"]
    assert reconcile(exp) == []
