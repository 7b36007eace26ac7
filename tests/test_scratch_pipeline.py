"""MNIST/CIFAR-10 loaders on files in the real formats, and configs/scratch.yaml on SLURM."""
from __future__ import annotations

import csv
import gzip
import json
import pickle

import numpy as np
import pytest

from conftest import cli, job_ids_from_table, sets, status_json, wait_for_jobs
from fixtures import write_cifar_like, write_mnist
from jobs.data.files import DataError
from jobs.data.formats import read_cifar10, read_idx, write_idx


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_and_header(tmp_path, gz):
    written = write_mnist(tmp_path, n_test=100, gz=gz)
    ext = ".gz" if gz else ""
    raw = tmp_path / "MNIST" / "raw"
    images = read_idx(raw / f"train-images-idx3-ubyte{ext}")
    assert images.shape == (1697, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images, written["x_train"])
    labels = read_idx(raw / f"t10k-labels-idx1-ubyte{ext}")
    assert np.array_equal(labels, written["y_test"])
    opener = gzip.open if gz else open
    with opener(raw / f"train-images-idx3-ubyte{ext}", "rb") as f:
        head = f.read(16)
    assert head == bytes([0, 0, 8, 3]) + (1697).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2


def test_idx_errors_are_clear(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04" + b"\x00" * 20)
    with pytest.raises(DataError, match="is not an IDX file"):
        read_idx(bad)
    write_idx(tmp_path / "short", np.zeros((3, 2, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


def test_cifar10_pickles_round_trip_with_channel_layout(tmp_path):
    written = write_cifar_like(tmp_path, n_train=50, n_test=10)
    folder = tmp_path / "cifar-10-batches-py"
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert batch[b"data"].shape == (10, 3072) and batch[b"data"].dtype == np.uint8
    # Official layout: 1024 red values, then green, then blue, each row-major 32x32.
    assert batch[b"data"][0, 0] == written["x_train"][0, 0, 0, 0]
    assert batch[b"data"][0, 1024 + 33] == written["x_train"][0, 1, 1, 1]
    loaded = read_cifar10(folder)
    assert np.array_equal(loaded["x_train"], written["x_train"]) and np.array_equal(loaded["y_test"], written["y_test"])
    assert list(loaded["classes"])[:2] == ["airplane", "automobile"]


def test_scratch_experiment_on_slurm(slurm, workspace):
    write_mnist(workspace["data"])
    write_cifar_like(workspace["data"])
    overrides = workspace["overrides"] + [
        "stages.scratch_cnn.epochs=5", "stages.scratch_cnn.val_size=200",
        "stages.numpy_mlp.max_steps=300", "stages.numpy_mlp.eval_freq=100", "stages.numpy_mlp.batch_size=100",
        "stages.numpy_mlp.learning_rate=0.01",
        "resources.cpus_per_task=2", "resources.mem=2G", "stages.report.resources.mem=1G",
    ]
    proc = cli("submit", "all", "-c", "configs/scratch.yaml", "--executor", "slurm", *sets(overrides))
    ids = job_ids_from_table(proc.stdout)
    assert set(ids) == {"download_mnist", "download_cifar10", "scratch_cnn", "numpy_mlp", "report"}
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
    assert "MNIST already staged" in download_log          # staged files are used, nothing fetched
    for stage in ("scratch_cnn", "numpy_mlp"):
        assert (results / stage / "curves.png").read_bytes()[:4] == b"\x89PNG"
    cli("report", "-c", "configs/scratch.yaml", *sets(overrides))
    with open(workspace["results"] / "efficiency.csv") as f:
        rows = {r["stage"]: r for r in csv.DictReader(f)}
    assert rows["scratch_cnn"]["sacct_state"] == "COMPLETED"
    # conv 1->16 (160) + conv 16->32 (4640) + fc 32*7*7->128 (200832) + fc 128->10 (1290)
    assert int(rows["scratch_cnn"]["trainable_params"]) == 160 + 4640 + 200832 + 1290
    assert int(rows["numpy_mlp"]["trainable_params"]) == 3072 * 100 + 100 + 100 * 10 + 10
    assert float(rows["numpy_mlp"]["test_acc"]) == pytest.approx(mlp["test_acc"])
