"""configs/cifar100_hpo.yaml on the real local SLURM cluster, submitted as a user would, over a
CIFAR-100 fixture in the release's pickle format, shrunk by `--set` (a tiny CNN, 2 epochs, 6
trials, 2 workers). One array task is cancelled mid-trial: the other worker fails the orphaned
trial from its stale heartbeat, retries it, and ends the study at exactly n_trials finished.
afterok then never lets the retrain start (one task was CANCELLED): `reconcile` clears it and a
second `submit` runs retrain -> evaluate -> report on the finished search."""
from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from pipeline.executors.slurm.executor import SlurmExecutor
from tests.support.cli import cli, job_ids_from_table, sets, status_json
from tests.support.cluster import wait_for_jobs, wait_sacct_final, wait_until
from tests.support.datasets import write_cifar100_like
from tests.support.results import efficiency

pytestmark = pytest.mark.slurm
CONFIG = "configs/cifar100_hpo.yaml"
N_TRIALS = 6
SHRINK = [
    "resources.gpus=0", "resources.cpus_per_task=1", "resources.mem=2G", "resources.time=00:10:00",
    "stages.search.resources.time=00:10:00", "stages.prepare.max_classes=10",
    "stages.search.model.kwargs={depth: 2}", "stages.search.epochs=3", "stages.search.batch_size=32",
    "stages.search.amp=false", "stages.search.channels_last=false", "stages.search.augment=[]",
    "stages.search.log_every=1000", "stages.search.warmup_epochs=0",
    "stages.search.search_space={lr: {type: float, low: 0.01, high: 0.3, log: true}, "
    "model.kwargs.width: {type: categorical, choices: [8, 16]}}",
    f"stages.search.n_trials={N_TRIALS}", "stages.search.startup_trials=2", "stages.search.prune_after_epochs=1",
    "stages.search.heartbeat_s=1", "stages.search.stale_after_s=6",
    "stages.search.resources.array=2", "stages.search.resources.array_limit=2",
]


@pytest.fixture(scope="module")
def search(slurm, tmp_path_factory):
    ws = tmp_path_factory.mktemp("hpo_slurm")
    for k in ("results", "logs", "data", "cache"):
        (ws / k).mkdir()
    write_cifar100_like(ws / "data" / "cifar100", per_fine_train=30, per_fine_test=4)
    overrides = [f"paths.{k}={ws / k}" for k in ("results", "logs", "data", "cache")] + SHRINK
    ids = job_ids_from_table(cli("submit", "all", "-c", CONFIG, "--executor", "slurm", *sets(overrides)).stdout)
    array = ids["search"]
    out = ws / "results" / "cifar100_hpo" / "search"
    task1_log = ws / "logs" / "cifar100_hpo" / "search" / f"{array}_1_0_log.out"
    # Cancel worker 1 as soon as it has started a trial: that trial is orphaned, RUNNING in the study.
    wait_until(lambda: task1_log.exists() and "(worker 1)" in task1_log.read_text(), 240)
    subprocess.run(["scancel", f"{array}_1"], check=True)
    cancelled_at = time.time()
    wait_until(lambda: (out / "_SUCCESS").exists(), 300)
    first = {"ids": ids, "array": array, "finished_after_cancel_s": time.time() - cancelled_at,
             "task1_log": task1_log.read_text(), "sacct": None}
    first["sacct"] = wait_sacct_final([array])
    # The controller marks retrain's afterok as never satisfiable on its next scheduling pass, not
    # at once when the task is cancelled: status reads that mark, so wait for it.
    wait_until(lambda: getattr(SlurmExecutor().live([ids["retrain"]]).get(ids["retrain"]), "never_starts", False), 60)
    first["status_stuck"] = status_json(CONFIG, overrides)
    first["reconcile"] = cli("reconcile", "-c", CONFIG, *sets(overrides)).stdout
    second = job_ids_from_table(cli("submit", "all", "-c", CONFIG, "--executor", "slurm", *sets(overrides)).stdout)
    wait_for_jobs(list(second.values()), timeout=300)
    wait_sacct_final([array, *second.values()])      # the jobs whose sacct lines `report` reads
    cli("report", "-c", CONFIG, *sets(overrides))
    return {"ws": ws, "out": out, "exp": ws / "results" / "cifar100_hpo", "overrides": overrides,
            "first": first, "second": second}


def _study_counts(search) -> dict:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    journal = next(search["out"].glob("study-*.journal"))
    study = optuna.load_study(study_name="cifar100_hpo.search",
                              storage=JournalStorage(JournalFileBackend(str(journal))))
    states = [t.state.name for t in study.trials]
    return {s: states.count(s) for s in set(states)} | {"trials": study.trials}


def test_workers_are_one_array_and_a_cancelled_one_costs_only_its_trial(search):
    first = search["first"]
    assert first["sacct"] == {f"{first['array']}_0": "COMPLETED", f"{first['array']}_1": "CANCELLED"}
    n = _study_counts(search)
    assert n.get("COMPLETE", 0) + n.get("PRUNED", 0) == N_TRIALS and "RUNNING" not in n and "WAITING" not in n
    # the orphaned trial was failed from its stale heartbeat and its parameters ran again
    failed = [t for t in n["trials"] if t.state.name == "FAIL"]
    retries = [t for t in n["trials"] if "retry_of" in t.user_attrs]
    assert len(failed) == 1 and [t.user_attrs["retry_of"] for t in retries] == [failed[0].number]
    assert retries[0].params == failed[0].params and retries[0].state.name in ("COMPLETE", "PRUNED")
    log = (search["ws"] / "logs" / "cifar100_hpo" / "search" / f"{first['array']}_0_0_log.out").read_text()
    assert f"trial {failed[0].number}: no heartbeat" in log and "study complete" in log


def test_status_and_reconcile_understand_the_array(search):
    stuck = search["first"]["status_stuck"]
    assert stuck["search"]["state"] == "done" and stuck["search"]["job_id"] == search["first"]["array"]
    assert stuck["retrain"]["state"] == "never-run"
    assert f"cancelled retrain (job {search['first']['ids']['retrain']})" in search["first"]["reconcile"]
    assert "search" not in search["second"]       # done: the second submit only queued what followed
    assert set(search["second"]) == {"retrain", "evaluate", "report"}
    final = status_json(CONFIG, search["overrides"])
    assert {s: r["state"] for s, r in final.items()} == {
        "download": "cached", "prepare": "cached", "search": "cached", "retrain": "done", "evaluate": "done",
        "report": "done"}


def test_retrain_holds_the_best_parameters_and_the_report_the_search(search):
    best = json.loads((search["out"] / "best.json").read_text())
    resolved = yaml.safe_load((search["exp"] / "retrain" / "resolved_train.yaml").read_text())
    assert resolved["best_params"] == best["best_params"]
    assert resolved["recipe"]["lr"] == best["best_params"]["lr"]
    assert resolved["recipe"]["model"]["kwargs"] == {"depth": 2, "width": best["best_params"]["model.kwargs.width"]}
    rows = efficiency(search["ws"] / "results", "cifar100_hpo")
    row = rows["search"]
    assert row["status"] == "done" and row["sacct_attempts"] == "2"      # both array tasks, summed
    sacct = subprocess.run(["sacct", "-n", "-P", "-X", "-j", search["first"]["array"], "-o", "JobID,ElapsedRaw"],
                           capture_output=True, text=True, check=True).stdout
    elapsed = sum(int(line.split("|")[1]) for line in sacct.splitlines() if line)
    assert abs(float(row["sacct_elapsed_s"]) - elapsed) <= 2
    assert float(rows["retrain"]["test_acc"]) >= 0.0 and rows["retrain"]["val_acc"] == ""
    report = (search["ws"] / "results" / "report.md").read_text()
    assert "hyper-parameter search" in report and f"(target {N_TRIALS} finished), by 2 worker(s)" in report
