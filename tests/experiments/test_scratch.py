"""configs/scratch.yaml on the real local SLURM cluster, over MNIST and CIFAR-10 files in their
official formats."""
from __future__ import annotations

import json

import pytest

from tests.support.cli import cli, job_ids_from_table, sets, status_json
from tests.support.cluster import wait_for_jobs
from tests.support.datasets import write_cifar_like, write_mnist
from tests.support.results import efficiency


def test_scratch_experiment_on_slurm(slurm, workspace):
    write_mnist(workspace["data"] / "mnist")
    write_cifar_like(workspace["data"] / "cifar10")
    overrides = workspace["overrides"] + [
        "stages.scratch_cnn.epochs=5",
        "stages.numpy_mlp.max_steps=100", "stages.numpy_mlp.eval_freq=50", "stages.numpy_mlp.batch_size=100",
        "resources.cpus_per_task=2", "resources.mem=2G", "stages.report.resources.mem=1G",
    ]
    proc = cli("submit", "all", "-c", "configs/scratch.yaml", "--executor", "slurm", *sets(overrides))
    ids = job_ids_from_table(proc.stdout)
    assert set(ids) == {"download_mnist", "prepare_mnist", "download_cifar10", "prepare_cifar10", "scratch_cnn",
                        "numpy_mlp", "report"}
    wait_for_jobs(list(ids.values()), timeout=400)
    states = status_json("configs/scratch.yaml", overrides)
    assert {s["state"] for s in states.values()} == {"done"}, states
    results = workspace["results"] / "scratch"
    cnn = json.loads((results / "scratch_cnn" / "metrics.json").read_text())
    assert cnn["test_acc"] >= 0.9                      # real handwriting, 5 epochs, hand-written gradients
    mlp = json.loads((results / "numpy_mlp" / "metrics.json").read_text())
    assert mlp["test_acc"] >= 0.5                      # 10 coloured classes; chance is 0.1
    log = next((workspace["logs"] / "scratch" / "scratch_cnn").glob("*_log.out")).read_text()
    assert "Epoch 5/5 | Train Loss:" in log
    download_log = next((workspace["logs"] / "scratch" / "download_mnist").glob("*_log.out")).read_text()
    assert "mnist already staged" in download_log          # staged files are used, nothing fetched
    mnist = json.loads((results / "prepare_mnist" / "metrics.json").read_text())
    # 1,497 training images in the fixture; 8.33% held out as val, stratified; the official test set kept.
    assert (mnist["train_size"], mnist["val_size"], mnist["test_size"]) == (1374, 123, 300)
    cifar = json.loads((results / "prepare_cifar10" / "metrics.json").read_text())
    assert (cifar["train_size"], cifar["val_size"], cifar["test_size"]) == (1000, 200, 200)
    for stage in ("scratch_cnn", "numpy_mlp"):
        assert (results / stage / "curves.png").read_bytes()[:4] == b"\x89PNG"
    cli("report", "-c", "configs/scratch.yaml", *sets(overrides))
    rows = efficiency(workspace["results"])
    assert rows["scratch_cnn"]["sacct_state"] == "COMPLETED"
    # conv 1->16 (160) + conv 16->32 (4640) + fc 32*7*7->128 (200832) + fc 128->10 (1290)
    assert int(rows["scratch_cnn"]["trainable_params"]) == 160 + 4640 + 200832 + 1290
    assert int(rows["numpy_mlp"]["trainable_params"]) == 3072 * 100 + 100 + 100 * 10 + 10
    assert float(rows["numpy_mlp"]["test_acc"]) == pytest.approx(mlp["test_acc"])
