"""Kinds `scratch_cnn` and `numpy_mlp` (jobs/stages/scratch.py) on the split of an upstream
`prepare` stage, in process. configs/scratch.yaml on SLURM: tests/experiments/test_scratch.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.data.files import DataError
from jobs.stages import data as data_stages
from jobs.stages import scratch as scratch_stages
from tests.support.contexts import stage_context
from tests.support.datasets import write_cifar_like, write_mnist


def stage_data(tmp_path, dataset: str, **prepare) -> str:
    """download (pre-staged files) -> prepare, in process; returns the prepare stage's name."""
    data_stages.download(data_stages.DownloadParams(dataset=dataset), stage_context(tmp_path, f"download_{dataset}"))
    name = f"prepare_{dataset}"
    data_stages.prepare(data_stages.PrepareParams(dataset=dataset, **prepare),
                        stage_context(tmp_path, name, [f"download_{dataset}"]))
    return name


def test_scratch_cnn_reads_the_prepared_split(tmp_path):
    write_mnist(tmp_path / "data" / "mnist", n_test=200)
    prep = stage_data(tmp_path, "mnist", val_fraction=0.1)
    ctx = stage_context(tmp_path, "scratch_cnn", [prep])
    params = scratch_stages.ScratchCNNParams(data_stage=prep, epochs=3, max_train=1000)
    metrics = scratch_stages.scratch_cnn_stage(params, ctx)
    assert ctx.accounting["samples_per_epoch"] == 1000 and ctx.accounting["total_samples"] == 3000
    assert metrics["test_acc"] >= 0.8                  # real handwriting (digits at 28 px), 1,000 images, 3 epochs
    history = json.loads((ctx.out_dir / "history.json").read_text())
    assert len(history) == 3 and history[-1]["val_acc"] == metrics["val_acc"]
    with pytest.raises(ValueError, match="reads stage 'prepare_mnist', which is not in its `needs`"):
        scratch_stages.scratch_cnn_stage(params, stage_context(tmp_path, "orphan"))


def test_scratch_cnn_refuses_colour_images_with_the_fix(tmp_path):
    write_cifar_like(tmp_path / "data" / "cifar10", n_train=50, n_test=10)
    prep = stage_data(tmp_path, "cifar10", val="test")
    with pytest.raises(DataError, match="greyscale images .* set `channels: grey` in stage 'prepare_cifar10'"):
        scratch_stages.scratch_cnn_stage(scratch_stages.ScratchCNNParams(data_stage=prep),
                                         stage_context(tmp_path, "scratch_cnn", [prep]))


def test_numpy_mlp_trains_on_all_training_images_and_reports_test(tmp_path):
    written = write_cifar_like(tmp_path / "data" / "cifar10", n_train=500, n_test=100)
    prep = stage_data(tmp_path, "cifar10", val="test")
    ctx = stage_context(tmp_path, "numpy_mlp", [prep])
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


