"""The stage library end to end on the real local SLURM cluster, with no code between the test and
the experiment: tests/experiments/library.yaml is submitted as a user would submit it (only the
paths point at this test's folders), over fixture files written in each release's own format:
  CIFAR-10 pickles  -> prepare (3 of 10 classes) -> resnet18 with ReLU -> SiLU surgery, and the
                       same resnet18 untouched -> evaluate: both, soft and val-weighted ensembles,
                       each with and without flip TTA
  EMNIST gzip IDX   -> prepare (`digits` split) -> timm resnet10t (grey -> 3 channels)
  CIFAR-100 pickles -> prepare (20 coarse superclasses) -> one epoch of resnet18
  report over everything; then `pipeline report` with the final sacct states."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from jobs.data.formats import write_idx
from tests.support.cli import cli, job_ids_from_table, sets, status_json
from tests.support.cluster import wait_for_jobs
from tests.support.datasets import (
    CIFAR100_COARSE,
    digits_28px,
    write_cifar10_three,
    write_cifar100_like,
)
from tests.support.results import read_csv, stage_json

pytestmark = pytest.mark.slurm
CONFIG = "tests/experiments/library.yaml"
EXPERIMENT = "library"
STAGES = ["cifar10_download", "cifar10_prepare", "resnet18_silu", "resnet18_relu", "cifar10_evaluate",
          "emnist_download", "emnist_prepare", "resnet10t", "cifar100_download", "cifar100_prepare",
          "cifar100_train", "report"]
MODELS = ["resnet18_silu", "resnet18_relu"]
EVAL_ROWS = ["resnet18_silu", "resnet18_silu+flip", "resnet18_relu", "resnet18_relu+flip", "ensemble_soft",
             "ensemble_soft+flip", "ensemble_val_weighted", "ensemble_val_weighted+flip"]
RESNET18_3 = 11_176_512 + 512 * 3 + 3            # torchvision resnet18 without fc, plus a 3-class head
RESNET10T_10 = 4_922_488 + 512 * 10 + 10         # timm resnet10t without fc, plus a 10-class head


def write_emnist_digits(data_dir: Path, per_class_train: int = 40, per_class_test: int = 10, seed: int = 0) -> dict:
    """EMNIST's `digits` split in NIST's gzip layout (emnist-digits-*-ubyte.gz, stored transposed as
    EMNIST stores glyphs, and the mapping file), made of scikit-learn's real handwritten digits at
    28x28: real strokes, ten classes a small network learns in a few epochs."""
    x, y = digits_28px()
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        train += list(idx[:per_class_train])
        test += list(idx[per_class_train:per_class_train + per_class_test])
    train, test = rng.permutation(train), rng.permutation(test)
    folder = Path(data_dir) / "EMNIST" / "gzip"
    folder.mkdir(parents=True, exist_ok=True)
    stored = {"train-images-idx3": x[train].transpose(0, 2, 1), "train-labels-idx1": y[train],
              "test-images-idx3": x[test].transpose(0, 2, 1), "test-labels-idx1": y[test]}
    for part, arr in stored.items():
        write_idx(folder / f"emnist-digits-{part}-ubyte.gz", arr)
    (folder / "emnist-digits-mapping.txt").write_text("".join(f"{i} {48 + i}\n" for i in range(10)))
    return {"x_test": x[test], "y_test": y[test].astype(np.int64)}


@pytest.fixture(scope="module")
def library(slurm, tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    for k in ("results", "logs", "data", "cache"):
        (root / k).mkdir()
    # each data set in its default folder, <paths.data>/<dataset>, where `download` finds it staged
    cifar10 = write_cifar10_three(root / "data" / "cifar10")
    emnist = write_emnist_digits(root / "data" / "emnist")
    cifar100 = write_cifar100_like(root / "data" / "cifar100")
    overrides = [f"paths.{k}={root / k}" for k in ("results", "logs", "data", "cache")]
    start = time.monotonic()
    proc = cli("submit", "all", "-c", CONFIG, "--executor", "slurm", *sets(overrides))
    ids = job_ids_from_table(proc.stdout)
    assert sorted(ids) == sorted(STAGES), proc.stdout          # one job per stage, none cached
    wait_for_jobs(list(ids.values()), timeout=600)
    wall_s = time.monotonic() - start
    cli("report", "-c", CONFIG, *sets(overrides))            # the report stage's own row, final sacct states
    results = root / "results" / EXPERIMENT
    return {"root": root, "overrides": overrides, "ids": ids, "results": results, "wall_s": wall_s,
            "cifar10": cifar10, "emnist": emnist, "cifar100": cifar100}


def stage_log(library: dict, stage: str) -> str:
    return (library["root"] / "logs" / EXPERIMENT / stage / f"{library['ids'][stage]}_0_log.out").read_text()


def test_every_stage_ran_as_its_own_completed_slurm_job(library):
    states = status_json(CONFIG, library["overrides"])
    assert {s: states[s]["state"] for s in STAGES} == {s: "done" for s in STAGES}
    rows = {r["stage"]: r for r in read_csv(library["root"] / "results" / "efficiency.csv")
            if r["experiment"] == EXPERIMENT}
    assert sorted(rows) == sorted(STAGES)
    assert {s: (rows[s]["job_id"], rows[s]["sacct_state"]) for s in STAGES} == \
        {s: (library["ids"][s], "COMPLETED") for s in STAGES}
    # every stage asked for one CPU (the config's experiment-wide resources): two ran side by side
    assert {rows[s]["cpus"] for s in STAGES} == {"1"}
    assert {rows[s]["kind"] for s in STAGES} == {"download", "prepare", "train", "evaluate", "report"}
    print(f"library DAG on SLURM: {library['wall_s']:.0f} s from submit to the last job's end")


def test_cifar10_subset_is_relabelled_with_mapping_tables(library):
    out = library["results"] / "cifar10_prepare"
    # cat (3), dog (5), airplane (0) become 0, 1, 2 in the order the config lists them
    assert stage_json(library["results"], "cifar10_prepare", "class_map_names.json") == {"cat": 0, "dog": 1, "airplane": 2}
    assert stage_json(library["results"], "cifar10_prepare", "class_map_ids.json") == {"3": 0, "5": 1, "0": 2}
    counts = read_csv(out / "class_counts.csv")
    # fixture: 100 training and 40 test images per kept class; val_fraction 0.2 of the training ones
    assert [(r["class"], r["name"], r["train"], r["val"], r["test"]) for r in counts] == \
        [("0", "cat", "80", "20", "40"), ("1", "dog", "80", "20", "40"), ("2", "airplane", "80", "20", "40")]
    with np.load(out / "split.npz") as split:
        assert list(split["classes"]) == ["cat", "dog", "airplane"]
        kept = np.isin(library["cifar10"]["y_test"], [3, 5, 0])     # bird and truck are dropped
        assert np.array_equal(split["x_test"], library["cifar10"]["x_test"][kept])
        assert np.array_equal(split["y_test"], np.array([{3: 0, 5: 1, 0: 2}[int(c)]
                                                         for c in library["cifar10"]["y_test"][kept]]))


def test_resnet18_activation_surgery_from_the_stage_log(library):
    log = stage_log(library, "resnet18_silu")
    assert "replace_activation: 9 ReLU module instances before" in log
    assert "replaced indices (1-based): 7-9 = layer3.1.relu, layer4.0.relu, layer4.1.relu" in log
    assert "ReLU remaining: 6" in log and "SiLU inserted: 3" in log
    assert "head fc: in_features=512, out_features=1000 -> in_features=512 out_features=3" in log
    assert f"params: trainable {RESNET18_3:,} of {RESNET18_3:,}" in log
    assert "pretrained: none (random init" in log and "Epoch 3/3 | Train Loss: " in log
    control = stage_log(library, "resnet18_relu")
    assert "replace_activation" not in control and "-> in_features=512 out_features=3" in control
    # Measured here (seed 0, 2-CPU node): val acc 1.000 for both from epoch 1 or 2 (test_train_stage.py
    # measured the same fixture at 1.000 over seeds 0-2); the bar leaves room for other CPUs' numerics.
    for stage in MODELS:
        assert stage_json(library["results"], stage)["val_acc"] >= 0.9, stage
        assert stage_json(library["results"], stage, "accounting.json")["samples_per_epoch"] == 240
    history = stage_json(library["results"], "resnet18_silu", "history.json")
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_emnist_timm_resnet10t_grey_to_three_channels(library):
    with np.load(library["results"] / "emnist_prepare" / "split.npz") as split:
        assert list(split["classes"]) == [str(d) for d in range(10)]      # from emnist-digits-mapping.txt
        # the glyphs come back upright (EMNIST stores them transposed) and in the release's order
        assert np.array_equal(split["x_test"], library["emnist"]["x_test"])
        assert np.array_equal(split["y_test"], library["emnist"]["y_test"])
        assert split["x_train"].shape == (320, 28, 28) and len(split["y_val"]) == 80
    log = stage_log(library, "resnet10t")
    assert "model resnet10t (timm), pretrained: none" in log
    assert "head fc: in_features=512, out_features=1000 -> in_features=512 out_features=10" in log
    assert "transform val: uint8 (N,28,28) -> float32 (N,3,32,32), grey copied to 3 channels, resize 32 (from 28)" \
        in log
    rows = {r["stage"]: r for r in read_csv(library["root"] / "results" / "efficiency.csv")}
    assert int(rows["resnet10t"]["trainable_params"]) == int(rows["resnet10t"]["total_params"]) == RESNET10T_10
    assert f"params: trainable {RESNET10T_10:,} of {RESNET10T_10:,}" in log
    # Measured here (seed 0 and 1): val acc 0.9125 after 3 epochs (0.35 -> 0.74 -> 0.91: BatchNorm's
    # running statistics catch up late from random init); 0.8 leaves room for other CPUs' numerics.
    assert stage_json(library["results"], "resnet10t")["val_acc"] >= 0.8
    assert float(rows["resnet10t"]["val_acc"]) == pytest.approx(stage_json(library["results"], "resnet10t")["val_acc"], abs=1e-4)


def test_cifar100_coarse_labels_and_a_short_training_run(library):
    prepared = stage_json(library["results"], "cifar100_prepare")
    assert prepared["num_classes"] == 20 and prepared["train_size"] + prepared["val_size"] == 300
    counts = read_csv(library["results"] / "cifar100_prepare" / "class_counts.csv")
    assert [r["name"] for r in counts] == CIFAR100_COARSE
    # fixture: 5 fine classes per superclass, 3 training and 1 test image each
    expected = np.bincount(library["cifar100"]["coarse_train"], minlength=20)
    assert [int(r["train"]) + int(r["val"]) for r in counts] == expected.tolist() == [15] * 20
    assert [int(r["test"]) for r in counts] == [5] * 20
    assert sum(int(r["val"]) for r in counts) == prepared["val_size"] and min(int(r["val"]) for r in counts) >= 1
    metrics = stage_json(library["results"], "cifar100_train")
    assert 0.0 <= metrics["val_acc"] <= 1.0 and metrics["epochs_run"] == 1
    history = stage_json(library["results"], "cifar100_train", "history.json")
    assert len(history) == 1 and history[0]["train_loss"] > 0
    assert "-> in_features=512 out_features=20" in stage_log(library, "cifar100_train")
    acct = stage_json(library["results"], "cifar100_train", "accounting.json")
    assert acct["samples_per_epoch"] == prepared["train_size"] and acct["total_params"] == 11_176_512 + 512 * 20 + 20


def test_ensembles_and_flip_tta_rows(library):
    out = library["results"] / "cifar10_evaluate"
    table = read_csv(out / "evaluation.csv")
    assert sorted(r["row"] for r in table) == sorted(EVAL_ROWS)
    assert {"row", "accuracy", "macro_f1"} <= set(table[0])
    rows = {r["row"]: r for r in table}
    assert {r["n_images"] for r in table} == {"120"}                  # 40 test images of each kept class
    # Measured here: 1.000 for every row (each member is at 1.000 on this fixture); same bar as above.
    assert {name: float(r["accuracy"]) >= 0.9 and float(r["macro_f1"]) >= 0.9 for name, r in rows.items()} == \
        {name: True for name in EVAL_ROWS}
    assert {r["row"]: r["tta"] for r in table} == {n: "yes" if n.endswith("+flip") else "no" for n in EVAL_ROWS}
    assert {r["kind"] for r in table if r["row"].startswith("ensemble_")} == {"ensemble"}
    # an ensemble costs what training all its members cost
    assert int(rows["ensemble_soft"]["trainable_params"]) == 2 * RESNET18_3
    metrics = stage_json(library["results"], "cifar10_evaluate")
    assert sorted(metrics["rows"]) == sorted(EVAL_ROWS)
    for name in EVAL_ROWS:
        assert metrics["rows"][name]["accuracy"] == pytest.approx(float(rows[name]["accuracy"]), abs=1e-4)
        assert metrics["rows"][name]["macro_f1"] == pytest.approx(float(rows[name]["macro_f1"]), abs=1e-4)
    assert metrics["rows"]["ensemble_soft"]["members"] == MODELS
    # val_weighted: weights are the members' val accuracies, normalised; evaluate measures them on
    # the same val split with the same best.pt the train stages scored, so theirs must match
    val = np.array([stage_json(library["results"], s)["val_acc"] for s in MODELS])
    assert metrics["rows"]["ensemble_val_weighted"]["weights"] == pytest.approx((val / val.sum()).tolist(), abs=1e-6)
    report = (library["root"] / "results" / "report.md").read_text()
    assert "| row | kind | tta | accuracy |" in report and "| ensemble_val_weighted+flip |" in report
    assert f"{EXPERIMENT}/cifar10_evaluate/evaluation.csv" in report
