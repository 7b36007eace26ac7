"""Sweeps on the real local SLURM cluster (pipeline/variants.py), over configs/quickstart.yaml
(scikit-learn's digits, real learning), submitted as a user would with `--sweep`: the shared
stages run once, each varied stage is one job array (evaluate waits on train with aftercorr),
the report runs once after every variant; an identical second submit submits nothing; a variant
that fails stops only its own later stage."""
from __future__ import annotations

import csv
import json

import pytest

from pipeline.executors.slurm.executor import SlurmExecutor
from tests.support.cli import cli, sets
from tests.support.cluster import wait_for_jobs, wait_sacct_final
from tests.support.experiments import write_experiment
from tests.support.results import read_csv

pytestmark = pytest.mark.slurm
CONFIG = "configs/quickstart.yaml"


def _table(stdout: str) -> list[dict]:
    """submit's variant table: stage, variants, action, job id, folder."""
    rows = [line.split() for line in stdout.splitlines() if line and not line.startswith(("stage ", "["))]
    return [dict(zip(("stage", "variants", "action", "job_id", "folder"), r)) for r in rows if len(r) == 5]


def _status(overrides: list[str]) -> dict[tuple[str, str], dict]:
    proc = cli("status", "-c", CONFIG, "--json", *sets(overrides), check=False)
    return {(r["variant"], r["stage"]): r for r in json.loads(proc.stdout)}


@pytest.fixture(scope="module")
def sweep(slurm, tmp_path_factory):
    ws = tmp_path_factory.mktemp("sweep")
    overrides = [f"paths.results={ws / 'results'}", f"paths.logs={ws / 'logs'}", "resources.cpus_per_task=1",
                 "stages.train.epochs=2", "stages.train.patience=0"]
    lrs = ["stages.train.lr=0.001,0.003,0.01"]
    first = cli("submit", "all", "-c", CONFIG, "--executor", "slurm", *sets(overrides), "--sweep", *lrs)
    rows = _table(first.stdout)
    wait_for_jobs([r["job_id"] for r in rows if r["job_id"] != "-"], timeout=420)
    again = cli("submit", "all", "-c", CONFIG, "--executor", "slurm", *sets(overrides), "--sweep", *lrs)
    # a second sweep, one of whose widths cannot be built: that variant's train fails. --wait
    # cancels what waits on it (it would wait forever), reports, and exits 1.
    widths = ["stages.train.model.kwargs.width=8,-1,16"]
    bad = cli("submit", "all", "-c", CONFIG, "--executor", "slurm", *sets(overrides), "--sweep", *widths, "--wait",
              check=False)
    bad_rows = _table(bad.stdout)
    wait_for_jobs(_jobs(bad_rows, "report"), timeout=120)     # afterany: it runs once the stuck one is gone
    status = _status(overrides)
    reconciled = cli("reconcile", "-c", CONFIG, *sets(overrides)).stdout
    states = wait_sacct_final([r["job_id"] for r in rows + bad_rows if r["job_id"] != "-"])    # what `report` reads
    cli("report", "-c", CONFIG, *sets(overrides))
    return {"ws": ws, "exp": ws / "results" / "quickstart", "rows": rows, "again": again.stdout, "bad": bad,
            "bad_rows": bad_rows, "reconciled": reconciled, "overrides": overrides, "status": status,
            "sacct": states}


def _jobs(rows: list[dict], stage: str) -> list[str]:
    return [r["job_id"] for r in rows if r["stage"] == stage]


def test_shared_stages_run_once_and_each_varied_stage_is_one_array(sweep):
    rows = sweep["rows"]
    assert len(_jobs(rows, "preprocess")) == 1 and "_" not in _jobs(rows, "preprocess")[0]
    train = _jobs(rows, "train")
    array = train[0].split("_")[0]
    assert train == [f"{array}_0", f"{array}_1", f"{array}_2"]
    assert wait_sacct_final([array]) == {f"{array}_{i}": "COMPLETED" for i in range(3)}
    evaluate = _jobs(rows, "evaluate")[0].split("_")[0]
    script = (sweep["ws"] / "logs" / "quickstart" / "evaluate" / f"{evaluate}_submission.sh").read_text()
    assert f"aftercorr:{array}" in script and "--array=0-2%3" in script
    report = _jobs(rows, "report")
    assert len(report) == 1 and "afterany:" in (sweep["ws"] / "logs" / "quickstart" / "report" /
                                                 f"{report[0]}_submission.sh").read_text()
    for lr in ("0.001", "0.003", "0.01"):
        metrics = json.loads((sweep["exp"] / "variants" / f"lr-{lr}" / "train" / "metrics.json").read_text())
        assert metrics["val_acc"] > 0.5
    assert not (sweep["exp"] / "train").exists()        # the plain run's folder is not written


def test_an_identical_second_submit_submits_nothing(sweep):
    rows = _table(sweep["again"])
    assert rows and {r["action"] for r in rows} == {"cached"} and {r["job_id"] for r in rows} == {"-"}


def test_a_failed_variant_leaves_the_others_done_and_wait_cancels_what_waits_on_it(sweep):
    bad = sweep["bad"]
    assert bad.returncode == 1, bad.stdout + bad.stderr
    stuck = [r["job_id"] for r in sweep["bad_rows"] if r["stage"] == "evaluate" and "width--1" in r["variants"]]
    assert f"[pipeline] variant width--1: cancelled evaluate (job {stuck[0]}): upstream stage 'train' failed" \
        in bad.stdout
    assert "[pipeline] variant width--1: train failed" in bad.stdout
    assert "[pipeline] variant width--1: evaluate never-run" in bad.stdout
    assert "[pipeline] 2 of 3 variant(s) done; not done: width--1" in bad.stdout
    status = sweep["status"]
    assert status[("", "report")]["state"] == "done"       # the sweep's report, not `stale`
    assert status[("width--1", "train")]["state"] == "failed"
    assert status[("width--1", "evaluate")]["state"] == "never-run"       # cancelled before it started
    for ok in ("width-8", "width-16"):
        assert status[(ok, "train")]["state"] == "done" and status[(ok, "evaluate")]["state"] == "done"
    assert "nothing to reconcile" in sweep["reconciled"]
    report = _jobs(sweep["bad_rows"], "report")[0]
    assert sweep["sacct"][report] == "COMPLETED"          # it reports on whatever finished, never cancelled
    assert not SlurmExecutor().live([r["job_id"] for r in sweep["bad_rows"] if r["job_id"] != "-"])


def test_the_report_compares_the_variants(sweep):
    rows = {r["variant"]: r for r in read_csv(sweep["exp"] / "variants" / "comparison.csv")}
    assert set(rows) == {"lr-0.001", "lr-0.003", "lr-0.01", "width-8", "width--1", "width-16"}
    assert rows["width--1"]["status"] == "failed" and rows["lr-0.01"]["status"] == "done"
    assert rows["lr-0.01"]["changed"] == "stages.train.lr=0.01" and float(rows["lr-0.01"]["test_acc"]) > 0.5
    assert int(rows["width-8"]["trainable_params"]) < int(rows["width-16"]["trainable_params"])
    assert rows["lr-0.01"]["epochs"] == "2" and float(rows["lr-0.01"]["cpu_hours"]) > 0
    assert (sweep["exp"] / "variants" / "comparison.png").stat().st_size > 5000
    report = (sweep["ws"] / "results" / "report.md").read_text()
    assert "### Variants of quickstart" in report and "Pareto front" in report
    with open(sweep["ws"] / "results" / "efficiency.csv") as f:
        eff = [r for r in csv.DictReader(f) if r["stage"] == "train"]
    assert {r["variant"] for r in eff} == {"lr-0.001", "lr-0.003", "lr-0.01", "width-8", "width--1", "width-16"}
    assert all(r["sacct_state"] == "COMPLETED" for r in eff if r["variant"].startswith("lr-"))


def test_resubmitting_a_half_failed_sweep_reruns_only_the_failed_variants(slurm, tmp_path):
    """Variants 2 and 4 of 4 fail (a file says so); once the cause is gone, the same submit runs
    those two again, as one job array of 2 tasks, says which, and keeps the other two."""
    fails = tmp_path / "fail-"
    config = write_experiment(tmp_path, {
        "name": "halves", "paths": {"results": str(tmp_path / "results"), "logs": str(tmp_path / "logs")},
        "resources": {"cpus_per_task": 1, "mem": "300M", "time": "00:05:00"},
        "stages": {"work": {"kind": "command", "env": {"N": "0", "FAILS": str(fails)}, "argv": [
            "python", "-c", "import os, sys; sys.exit(3 if os.path.exists(os.environ['FAILS'] + os.environ['N']) else 0)"]}}})
    for n in (2, 4):
        (tmp_path / f"fail-{n}").touch()
    sweep = ["--sweep", "stages.work.env.N=1,2,3,4", "--executor", "slurm", "-c", str(config)]
    first = cli("submit", "all", *sweep, "--wait", check=False)
    assert first.returncode == 1 and "2 of 4 variant(s) done" in first.stdout
    for n in (2, 4):
        (tmp_path / f"fail-{n}").unlink()
    again = cli("submit", "all", *sweep, "--wait")
    rows = [r for r in _table(again.stdout) if r["stage"] == "work"]
    rerun = [r for r in rows if r["action"] == "submit"]
    assert [r["variants"] for r in rerun] == ["N-2", "N-4"], again.stdout
    assert {r["job_id"].split("_")[0] for r in rerun} == {rerun[0]["job_id"].split("_")[0]}   # one array
    assert [r["action"] for r in rows if r not in rerun] == ["cached", "cached"]
    assert "2 of 4 variant(s) run again" in again.stdout and "N-2, N-4" in again.stdout
    assert "4 of 4 variant(s) done" in again.stdout
