"""The quickstart DAG end to end with the local executor: real digits, real training, real files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.accounting.record import COLUMNS
from tests.support import quickstart_runs
from tests.support.cli import cli, sets, status_json
from tests.support.results import efficiency, read_csv

CONFIG = "configs/quickstart.yaml"
STAGES = ["download", "preprocess", "train", "evaluate", "report"]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """One full local run shared by the assertions below: this module's own copy of the session's
    finished quickstart run (tests/support/quickstart_runs.py; its data folder is that run's)."""
    run = quickstart_runs.private_copy(tmp_path_factory, "quickstart")
    return {**run, "results": run["root"] / "results" / "quickstart"}


def test_every_stage_done_and_accurate(done_run):
    states = status_json(CONFIG, done_run["overrides"])
    assert [states[s]["state"] for s in STAGES] == ["done"] * 5
    metrics = json.loads((done_run["results"] / "evaluate" / "metrics.json").read_text())
    assert metrics["test_acc"] >= 0.95
    assert 0.9 <= metrics["macro_f1"] <= 1.0
    with np.load(done_run["results"] / "preprocess" / "split.npz") as split:
        assert metrics["test_size"] == len(split["y_test"]) > 250
    for stage in STAGES:
        assert (done_run["results"] / stage / "_SUCCESS").exists()
        assert (done_run["results"] / stage / "config.yaml").exists()   # the resolved config


def test_data_manifest_and_stratified_split(done_run):
    data = done_run["data"] / "digits"
    manifest = json.loads((data / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {"images.npy", "labels.npy"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    with np.load(done_run["results"] / "preprocess" / "split.npz") as split:
        sizes = {s: len(split[f"y_{s}"]) for s in ("train", "val", "test")}
        assert sum(sizes.values()) == 1797
        for s in ("val", "test"):   # every class in every split, in proportion (+-2 images)
            counts = np.bincount(split[f"y_{s}"], minlength=10)
            assert counts.min() >= 0.15 * 174 - 2 and counts.max() <= 0.15 * 183 + 2
    rows = read_csv(done_run["results"] / "preprocess" / "class_counts.csv")
    assert len(rows) == 10 and sum(int(r["train"]) + int(r["val"]) + int(r["test"]) for r in rows) == 1797


def test_training_log_and_curves(done_run):
    log = next((done_run["root"] / "logs" / "quickstart" / "train").glob("*.log")).read_text()
    assert "Epoch 1/15 | Train Loss: " in log and "| Val Acc: " in log and "img/s" in log
    assert "\r" not in log
    assert "best val acc" in log
    history = json.loads((done_run["results"] / "train" / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 3
    assert (done_run["results"] / "train" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_outputs(done_run):
    out = done_run["results"] / "evaluate"
    lines = (out / "confusion_matrix.csv").read_text().splitlines()
    matrix = np.array([[int(v) for v in line.split(",")[1:]] for line in lines[1:]])
    assert matrix.shape == (10, 10) and matrix.sum() == json.loads((out / "metrics.json").read_text())["test_size"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics["test_acc"])
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "per_class.csv").read_text().splitlines()) == 11


def test_efficiency_csv_and_report(done_run):
    results = done_run["root"] / "results"
    rows = efficiency(results)
    assert list(rows) == STAGES
    assert set(COLUMNS) <= set(next(iter(rows.values())))
    train = rows["train"]
    assert int(train["trainable_params"]) == int(train["total_params"]) > 10_000
    with np.load(done_run["results"] / "preprocess" / "split.npz") as split:
        n_train = len(split["y_train"])
    assert int(train["samples_per_epoch"]) == n_train
    assert int(train["total_samples"]) == int(train["epochs"]) * n_train
    assert float(train["throughput_per_s"]) > 0 and float(train["wall_s"]) > 0
    assert train["device"] == "cpu" and train["precision"] == "fp32" and train["seed"] == "0"
    assert float(rows["evaluate"]["test_acc"]) >= 0.95
    assert all(r["sacct_state"] == "" for r in rows.values())     # ran locally: no sacct
    report = (results / "report.md").read_text()
    assert "## quickstart" in report and "sacct) columns are empty: no SLURM job ids" in report
    assert "quickstart/evaluate/confusion.png" in report


def test_second_submit_runs_nothing_and_changes_rerun_downstream_only(done_run):
    again = cli("submit", "all", "-c", CONFIG, "--executor", "local", *sets(done_run["overrides"]))
    assert "running" not in again.stdout and again.stdout.count("cached") == 5
    states = status_json(CONFIG, done_run["overrides"])
    assert {s["state"] for s in states.values()} == {"cached"}
    changed = done_run["overrides"] + ["stages.evaluate.batch_size=128"]
    explain = cli("submit", "all", "-c", CONFIG, "--executor", "local", "--dry-run", "--explain", *sets(changed))
    assert "train            cached" in explain.stdout
    assert "evaluate         submit  will run: fingerprint changed" in explain.stdout
    assert "report           submit  upstream 'evaluate' reruns" in explain.stdout


def test_missing_or_corrupt_data_gives_actionable_error(done_run):
    labels = done_run["data"] / "digits" / "labels.npy"
    good = labels.read_bytes()
    args = ["run", "preprocess", "-c", CONFIG, "--force", *sets(done_run["overrides"])]
    try:
        labels.write_bytes(b"garbage")
        proc = cli(*args, check=False)
        assert proc.returncode == 1
        assert "data file corrupted (sha256 differs" in proc.stdout and "run the `download` stage again" in proc.stdout
        assert "[pipeline] preprocess failed: data file corrupted" in proc.stderr   # the one line a user reads
        labels.unlink()
        proc = cli(*args, check=False)
        assert proc.returncode == 1 and f"data file missing: {labels}" in proc.stdout
    finally:
        labels.write_bytes(good)
    assert cli(*args).returncode == 0


def test_killed_training_resumes_from_its_checkpoint(tmp_path_factory):
    """SIGTERM after epoch k: no _SUCCESS; the rerun continues at k+1 and ends with all epochs.
    (The run, on a copy of the finished quickstart, is shared with tests/experiments/test_reliability.py.)"""
    resumed = quickstart_runs.interrupted_and_resumed(tmp_path_factory)
    train, first, rerun = resumed["train"], resumed["first"], resumed["rerun"]
    assert first["returncode"] != 0 and not first["success"]
    assert rerun.returncode == 0, rerun.stdout
    epochs = quickstart_runs.RESUMED_EPOCHS
    resumed_after = int(rerun.stdout.split("after epoch ")[1].split()[0])
    assert 3 <= resumed_after < epochs
    assert f"Epoch {resumed_after + 1}/{epochs}" in rerun.stdout and f"Epoch 1/{epochs}" not in rerun.stdout
    history = json.loads((train / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    assert (train / "_SUCCESS").exists()
