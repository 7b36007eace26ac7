"""MNIST/CIFAR-10 loaders on files in the real formats; scratch_cnn and numpy_mlp on the split
of an upstream `prepare` stage; and configs/scratch.yaml on SLURM."""
from __future__ import annotations

import csv
import gzip
import json
import logging
import pickle

import numpy as np
import pytest

from conftest import cli, job_ids_from_table, sets, status_json, wait_for_jobs
from fixtures import write_cifar_like, write_mnist
from jobs.data.files import DataError
from jobs.data.formats import read_cifar10, read_idx, write_idx
from jobs.stages import data as data_stages
from jobs.stages import scratch as scratch_stages
from pipeline.contract import StageContext


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


def make_ctx(tmp_path, stage: str, upstream: list[str] = ()) -> StageContext:
    out = tmp_path / "results" / stage
    out.mkdir(parents=True, exist_ok=True)
    return StageContext(experiment="t", stage=stage, out_dir=out,
                        upstream={u: tmp_path / "results" / u for u in upstream}, data_dir=tmp_path / "data",
                        cache_dir=tmp_path / "cache", seed=0, device="cpu",
                        log=logging.getLogger(f"test.{stage}"), accounting={})


def stage_data(tmp_path, dataset: str, **prepare) -> str:
    """download (pre-staged files) -> prepare, in process; returns the prepare stage's name."""
    data_stages.download(data_stages.DownloadParams(dataset=dataset), make_ctx(tmp_path, f"download_{dataset}"))
    name = f"prepare_{dataset}"
    data_stages.prepare(data_stages.PrepareParams(dataset=dataset, **prepare),
                        make_ctx(tmp_path, name, [f"download_{dataset}"]))
    return name


def test_scratch_cnn_reads_the_prepared_split(tmp_path):
    write_mnist(tmp_path / "data" / "mnist", n_test=200)
    prep = stage_data(tmp_path, "mnist", val_fraction=0.1)
    ctx = make_ctx(tmp_path, "scratch_cnn", [prep])
    params = scratch_stages.ScratchCNNParams(data_stage=prep, epochs=3, max_train=1000)
    metrics = scratch_stages.scratch_cnn_stage(params, ctx)
    assert ctx.accounting["samples_per_epoch"] == 1000 and ctx.accounting["total_samples"] == 3000
    assert metrics["test_acc"] >= 0.8                  # real handwriting (digits at 28 px), 1,000 images, 3 epochs
    history = json.loads((ctx.out_dir / "history.json").read_text())
    assert len(history) == 3 and history[-1]["val_acc"] == metrics["val_acc"]
    with pytest.raises(ValueError, match="reads stage 'prepare_mnist', which is not in its `needs`"):
        scratch_stages.scratch_cnn_stage(params, make_ctx(tmp_path, "orphan"))


def test_scratch_cnn_refuses_colour_images_with_the_fix(tmp_path):
    write_cifar_like(tmp_path / "data" / "cifar10", n_train=50, n_test=10)
    prep = stage_data(tmp_path, "cifar10", val="test")
    with pytest.raises(DataError, match="greyscale images .* set `channels: grey` in stage 'prepare_cifar10'"):
        scratch_stages.scratch_cnn_stage(scratch_stages.ScratchCNNParams(data_stage=prep),
                                         make_ctx(tmp_path, "scratch_cnn", [prep]))


def test_numpy_mlp_trains_on_all_training_images_and_reports_test(tmp_path):
    written = write_cifar_like(tmp_path / "data" / "cifar10", n_train=500, n_test=100)
    prep = stage_data(tmp_path, "cifar10", val="test")
    ctx = make_ctx(tmp_path, "numpy_mlp", [prep])
    params = scratch_stages.NumpyMLPParams(data_stage=prep, max_steps=200, eval_freq=100, batch_size=50)
    metrics = scratch_stages.numpy_mlp_stage(params, ctx)
    assert ctx.accounting["samples_per_epoch"] == 500                # val: test keeps every training image
    assert ctx.accounting["trainable_params"] == 3072 * 100 + 100 + 100 * 10 + 10
    assert metrics["test_acc"] >= 0.5                                 # 10 coloured classes; chance is 0.1
    # The practical's preprocessing: pixel values minus the training set's mean image, no scaling.
    raw = {k: written[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    features = scratch_stages.cifar_features(raw, "mean_image")
    mean_image = raw["x_train"].reshape(500, -1).astype(np.float64).mean(0)
    assert features["x_test"].shape == (100, 3072)
    np.testing.assert_allclose(features["x_test"], raw["x_test"].reshape(100, -1) - mean_image, atol=1e-3)
    assert abs(features["x_train"].mean()) < 1e-3 and features["x_train"].std() > 10      # pixel units, not [0, 1]
    standardized = scratch_stages.cifar_features(raw, "standardize")
    np.testing.assert_allclose(standardized["x_train"].std(0), 1.0, atol=1e-3)


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
    with open(workspace["results"] / "efficiency.csv") as f:
        rows = {r["stage"]: r for r in csv.DictReader(f)}
    assert rows["scratch_cnn"]["sacct_state"] == "COMPLETED"
    # conv 1->16 (160) + conv 16->32 (4640) + fc 32*7*7->128 (200832) + fc 128->10 (1290)
    assert int(rows["scratch_cnn"]["trainable_params"]) == 160 + 4640 + 200832 + 1290
    assert int(rows["numpy_mlp"]["trainable_params"]) == 3072 * 100 + 100 + 100 * 10 + 10
    assert float(rows["numpy_mlp"]["test_acc"]) == pytest.approx(mlp["test_acc"])
