"""EMNIST pipeline on fixture files in NIST's gzip format, with a random-weights ResNet-18
checkpoint standing in for the ImageNet weights; the DAG runs on the real local SLURM cluster."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from jobs.data.formats import fix_orientation, read_mapping
from tests.support.cli import cli, job_ids_from_table, sets, status_json
from tests.support.cluster import wait_for_jobs, wait_for_requeued_start, wait_until
from tests.support.datasets import (
    EMNIST_BYCLASS,
    L_GLYPH,
    write_emnist,
    write_random_resnet18,
)
from tests.support.results import efficiency, read_csv

CONFIG = "configs/emnist.yaml"
STAGES = ["download", "preprocess", "linear_probe", "unfreeze", "full", "evaluate", "report"]
FC = 512 * 62 + 62                     # the new head
LAYER4 = 8_393_728                     # ResNet-18's last residual stage
BACKBONE = 11_176_512                  # everything but fc


def small_overrides(root, weights) -> list[str]:
    """Fixture paths, CPU, 32 px, few epochs: the config's structure, at test size."""
    out = [f"paths.{k}={root / k}" for k in ("results", "logs", "data", "cache")]
    out += [f"stages.download.weights_files.resnet18={weights}", "resources.gpus=0", "resources.cpus_per_task=2",
            "resources.mem=3G"]
    for stage in ("download", "preprocess", "evaluate", "report"):   # these set their own sizes
        out += [f"stages.{stage}.resources.cpus_per_task=1", f"stages.{stage}.resources.mem=2G"]
    for stage, epochs in (("linear_probe", 10), ("unfreeze", 3), ("full", 1)):
        out += [f"stages.{stage}.resolution=32", f"stages.{stage}.epochs={epochs}", f"stages.{stage}.amp=false",
                f"stages.{stage}.batch_size=64", f"stages.{stage}.log_every=5"]
    # The probe runs all its 10 epochs (no early stop): one full-forward run of the same 10 epochs
    # then serves as the reference of both the cached-features probe and the preempted probe.
    # 11 steps are too few for BatchNorm running statistics to follow weights moved at the
    # config's lr (0.02, sized for 700k images an epoch): at fixture scale, fine-tune gently.
    return out + ["stages.linear_probe.patience=0", "stages.full.lr=0.002"]


@pytest.fixture(scope="module")
def emnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("emnist")
    for k in ("results", "logs", "data", "cache"):
        (root / k).mkdir()
    fixture = write_emnist(root / "data" / "emnist")          # <paths.data>/<dataset>: the download stage's root
    weights = write_random_resnet18(root / "random_resnet18.pt", calibrate=fixture["x_train"])
    return {"root": root, "fixture": fixture, "overrides": small_overrides(root, weights), "weights": weights}


@pytest.fixture(scope="module")
def emnist_run(slurm, emnist_root):
    proc = cli("submit", "all", "-c", CONFIG, "--executor", "slurm", *sets(emnist_root["overrides"]))
    ids = job_ids_from_table(proc.stdout)
    assert list(ids) == STAGES[1:]                        # download ran here, on the submit host
    assert "download: runs on the submit host" in proc.stdout
    wait_for_jobs(list(ids.values()), timeout=500)
    cli("report", "-c", CONFIG, *sets(emnist_root["overrides"]))
    return {**emnist_root, "ids": ids, "results": emnist_root["root"] / "results" / "emnist"}


def copy_upstream(emnist_run, results) -> None:
    """The DAG's download and preprocess results under another results folder, where they are
    done (same parameters, data folder and code): only the stages after them run there."""
    for stage in ("download", "preprocess"):
        shutil.copytree(emnist_run["results"] / stage, results / "emnist" / stage)


@pytest.fixture(scope="module")
def full_forward_probe(emnist_run, tmp_path_factory):
    """linear_probe as the DAG ran it (10 epochs, seed 0) but with a full forward every epoch
    instead of cached features, in one unbroken local run: the reference that the cached probe
    must match (the same head) and that the preempted, resumed probe must match (the same epochs)."""
    results = tmp_path_factory.mktemp("full_forward") / "results"
    copy_upstream(emnist_run, results)
    overrides = [o for o in emnist_run["overrides"] if not o.startswith("paths.results")]
    overrides += [f"paths.results={results}", "stages.linear_probe.cache_features=false"]
    cli("run", "linear_probe", "-c", CONFIG, *sets(overrides))
    return results / "emnist" / "linear_probe"


def test_orientation_fix_is_a_transpose():
    stored = L_GLYPH.T[None]                               # how EMNIST keeps glyphs on disk
    assert np.array_equal(fix_orientation(stored)[0], L_GLYPH)
    rotated_flipped = np.fliplr(np.rot90(stored[0], k=-1))  # rotate -90 degrees, then flip
    assert np.array_equal(rotated_flipped, L_GLYPH)


def test_mapping_files(tmp_path):
    (tmp_path / "m.txt").write_text("0 48\n1 49\n2 65\n")
    assert read_mapping(tmp_path / "m.txt") == ["0", "1", "A"]
    (tmp_path / "letters.txt").write_text("1 65 97\n2 66 98\n")
    assert read_mapping(tmp_path / "letters.txt") == ["?", "Aa", "Bb"]


def test_dag_completes_on_slurm_with_exact_parameter_counts(emnist_run):
    states = status_json(CONFIG, emnist_run["overrides"])
    assert [states[s]["state"] for s in STAGES] == ["done"] * len(STAGES)
    rows = efficiency(emnist_run["root"] / "results", "emnist")
    assert list(rows) == STAGES and {r["sacct_state"] for s, r in rows.items() if s != "download"} == {"COMPLETED"}
    assert rows["download"]["ran_on"] == "submit_host" and rows["download"]["sacct_state"] == ""   # no job
    assert int(rows["linear_probe"]["trainable_params"]) == FC == 31_806
    assert int(rows["unfreeze"]["trainable_params"]) == LAYER4 + FC
    assert int(rows["full"]["trainable_params"]) == BACKBONE + FC
    assert {int(rows[s]["total_params"]) for s in ("linear_probe", "unfreeze", "full")} == {BACKBONE + FC}
    train_size = len(np.load(emnist_run["results"] / "preprocess" / "split.npz")["y_train"])
    assert int(rows["linear_probe"]["samples_per_epoch"]) == train_size
    assert int(rows["linear_probe"]["total_samples"]) == int(rows["linear_probe"]["epochs"]) * train_size
    acct = json.loads((emnist_run["results"] / "linear_probe" / "accounting.json").read_text())
    assert acct["probe_mode"] == "cached_features" and acct["precision"] == "fp32"
    assert json.loads((emnist_run["results"] / "unfreeze" / "accounting.json").read_text())["probe_mode"] == "full_forward"
    logs = emnist_run["root"] / "logs" / "emnist"
    probe_log = (logs / "linear_probe" / f"{emnist_run['ids']['linear_probe']}_0_log.out").read_text()
    assert "training mode cached_features" in probe_log and "cached backbone features: train (" in probe_log
    assert "Epoch 1/10 | Train Loss: " in probe_log and "| Val Acc: " in probe_log
    unfreeze_log = (logs / "unfreeze" / f"{emnist_run['ids']['unfreeze']}_0_log.out").read_text()
    assert "training mode full_forward: 15 trainable tensors outside the head fc" in unfreeze_log
    assert "resize 32 (from 28) with rotate(+-10 deg), resized_crop(area 0.72-1) in one resampling" in unfreeze_log


def test_download_stages_the_weights_with_a_manifest(emnist_run):
    """The local weights file is staged under torchvision's own name in the hub cache and recorded
    in <cache>/MANIFEST.json; training read it from there (offline) with its sha256 checked."""
    cache = emnist_run["root"] / "cache"
    staged = cache / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert staged.read_bytes() == emnist_run["weights"].read_bytes()
    manifest = json.loads((cache / "MANIFEST.json").read_text())
    assert manifest["files"]["hub/checkpoints/resnet18-f37072fd.pth"]["model"] == "resnet18"
    metrics = json.loads((emnist_run["results"] / "download" / "metrics.json").read_text())
    assert metrics["weights"] == {"resnet18": [str(staged)]} and metrics["dataset"] == "emnist"


def test_preprocess_split_orientation_and_counts(emnist_run):
    fixture = emnist_run["fixture"]
    with np.load(emnist_run["results"] / "preprocess" / "split.npz") as split:
        assert np.array_equal(split["x_test"][fixture["l_index"]], L_GLYPH)     # upright after the fix
        assert np.array_equal(split["x_test"], fixture["x_test"]) and np.array_equal(split["y_test"], fixture["y_test"])
        assert list(split["classes"]) == EMNIST_BYCLASS
        n_val, n_train = len(split["y_val"]), len(split["y_train"])
        assert n_val + n_train == 62 * 12 and np.bincount(split["y_val"], minlength=62).min() >= 1
        # disjoint: every training image is used exactly once across train and val
        both = np.concatenate([split["x_train"], split["x_val"]]).reshape(n_train + n_val, -1)
        assert len(np.unique(both, axis=0)) == 62 * 12
    counts = read_csv(emnist_run["results"] / "preprocess" / "class_counts.csv")
    assert len(counts) == 62 and counts[10]["name"] == "A" and int(counts[10]["test"]) == 3


def test_accuracy_and_evaluate_outputs(emnist_run):
    out = emnist_run["results"] / "evaluate"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_acc"] >= 0.85                       # fixture: 62 glyphs, random-init backbone
    assert {m: r["test_acc"] >= 0.6 for m, r in metrics["models"].items()} == \
        {"linear_probe": True, "unfreeze": True, "full": True}
    lines = (out / "confusion_matrix.csv").read_text().splitlines()
    matrix = np.array([[int(v) for v in line.split(",")[1:]] for line in lines[1:]])
    assert matrix.shape == (62, 62) and matrix.sum() == 186
    assert lines[0].split(",")[1:4] == ["0", "1", "2"] and lines[37].startswith("a,")
    per_class = read_csv(out / "per_class.csv")
    assert [r["name"] for r in per_class] == EMNIST_BYCLASS and sum(int(r["support"]) for r in per_class) == 186
    ablation = {r["stage"]: r for r in read_csv(out / "ablation.csv")}
    assert set(ablation) == {"linear_probe", "unfreeze", "full"}
    assert float(ablation["linear_probe"]["trainable_params_m"]) == round(FC / 1e6, 4)
    assert int(ablation["unfreeze"]["epochs_x_samples"]) == 3 * int(ablation["unfreeze"]["samples_per_epoch"])
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    report = (emnist_run["root"] / "results" / "report.md").read_text()
    assert "Most accurate: `" in report and "emnist/full/curves.png" in report


def test_cached_probe_matches_full_forward_probe(emnist_run, full_forward_probe):
    """Same data, same seed: features once vs a full forward every epoch give the same head."""
    cached = json.loads((emnist_run["results"] / "linear_probe" / "metrics.json").read_text())
    full = json.loads((full_forward_probe / "metrics.json").read_text())
    assert full["probe_mode"] == "full_forward"
    assert abs(cached["val_acc"] - full["val_acc"]) <= 0.005 + 1e-9
    h_cached = json.loads((emnist_run["results"] / "linear_probe" / "history.json").read_text())
    h_full = json.loads((full_forward_probe / "history.json").read_text())
    assert [round(h["train_loss"], 3) for h in h_cached] == [round(h["train_loss"], 3) for h in h_full]


def test_missing_data_and_bad_weights_name_the_download_stage(emnist_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(emnist_root["root"] / "data", data)
    overrides = [o for o in emnist_root["overrides"] if not o.startswith(("paths.data", "paths.results", "paths.cache"))]
    overrides += [f"paths.data={data}", f"paths.results={tmp_path / 'results'}", f"paths.cache={tmp_path / 'cache'}"]
    cli("run", "download", "-c", CONFIG, *sets(overrides))
    gz = Path("emnist", "EMNIST", "gzip", "emnist-byclass-test-labels-idx1-ubyte.gz")
    (data / gz).unlink()
    proc = cli("run", "preprocess", "-c", CONFIG, *sets(overrides), check=False)
    assert proc.returncode == 1
    assert "data file missing" in proc.stderr and "run the `download` stage again" in proc.stderr
    shutil.copyfile(emnist_root["root"] / "data" / gz, data / gz)
    staged = json.loads((tmp_path / "results" / "emnist" / "download" / "metrics.json").read_text())["weights"]
    staged = staged["resnet18"][0]
    with open(staged, "r+b") as f:                       # flip bytes in the staged checkpoint
        f.seek(2000)
        f.write(b"corrupt")
    proc = cli("run", "linear_probe", "-c", CONFIG, *sets(overrides), check=False)
    assert proc.returncode == 1
    assert "data file corrupted (sha256 differs" in proc.stderr and "resnet18" in proc.stderr


def test_preempted_training_requeues_and_resumes_from_its_checkpoint(slurm, emnist_run, full_forward_probe,
                                                                    tmp_path):
    """SLURM signals USR2 before a time limit or on preemption (signal_delay_s): submitit
    requeues the job and the stage resumes after its last finished epoch, not from 0."""
    overrides = [o for o in emnist_run["overrides"] if not o.startswith(("paths.results", "paths.logs"))]
    overrides += [f"paths.results={tmp_path / 'results'}", f"paths.logs={tmp_path / 'logs'}",
                  "stages.linear_probe.cache_features=false", "stages.linear_probe.epochs=10",
                  "stages.linear_probe.patience=0"]
    copy_upstream(emnist_run, tmp_path / "results")       # download and preprocess are done: one job
    ids = job_ids_from_table(cli("submit", "linear_probe", "-c", CONFIG, "--executor", "slurm", *sets(overrides)).stdout)
    assert list(ids) == ["linear_probe"]
    job = ids["linear_probe"]
    log = tmp_path / "logs" / "emnist" / "linear_probe" / f"{job}_0_log.out"
    wait_until(lambda: log.exists() and "Epoch 3/10" in log.read_text(), 240)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_for_requeued_start(log, job)
    wait_for_jobs([job], timeout=300)
    text = log.read_text()
    assert "Caught signal SIGUSR2" in text
    after = text.split("resumed from ")[1]
    resumed_after = int(after.split("after epoch ")[1].split()[0])
    assert 3 <= resumed_after < 10
    assert f"Epoch {resumed_after + 1}/10" in after and "Epoch 1/10" not in after
    history = json.loads((tmp_path / "results" / "emnist" / "linear_probe" / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 11))
    assert status_json(CONFIG, overrides)["linear_probe"]["state"] == "done"
    # The resumed run computes what an unbroken run of the same stage computes, epoch by epoch.
    reference = json.loads((full_forward_probe / "history.json").read_text())
    assert [h["epoch"] for h in reference] == list(range(1, 11))
    for key in ("train_loss", "val_loss", "val_acc"):
        assert [round(h[key], 4) for h in history] == [round(h[key], 4) for h in reference]


