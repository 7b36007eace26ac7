"""Kind `evaluate` and its library (jobs/evaluation/metrics.py, plots.py): ensemble math, flip TTA,
scores against scikit-learn, the reduced confusion view for many classes; one local run on
scikit-learn's digits with two trained models, both ensembles and TTA."""
from __future__ import annotations

import csv
import json
import struct

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)
from torch import nn

from jobs.evaluation.metrics import (
    predict_proba,
    score,
    soft_vote,
    val_weighted_vote,
    val_weights,
)
from jobs.evaluation.plots import MANY_CLASSES, confused_pairs, plot_confusion
from jobs.stages.evaluate import EvaluateParams, effect_sentence
from pipeline.contract import ConfigError
from tests.support.cli import cli, sets
from tests.support.contexts import stage_context
from tests.support.experiments import write_experiment
from tests.support.results import read_csv

# ------------------------------------------------------------------------------------ ensembles
A = np.array([[0.6, 0.4, 0.0], [0.2, 0.2, 0.6]])           # member a: 2 images, 3 classes
B = np.array([[0.3, 0.7, 0.0], [0.1, 0.5, 0.4]])           # member b


def test_soft_vote_is_the_mean_of_the_members():
    assert soft_vote([A, B]) == pytest.approx(np.array([[0.45, 0.55, 0.0], [0.15, 0.35, 0.5]]))
    assert soft_vote([A, B]).argmax(1).tolist() == [1, 2]


def test_val_weighted_vote_weights_by_normalised_val_accuracy():
    assert val_weights([0.8, 0.2]) == pytest.approx([0.8, 0.2])
    assert val_weights([0.9, 0.6]) == pytest.approx([0.6, 0.4])            # 0.9 / 1.5, 0.6 / 1.5
    # a: 0.8, b: 0.2 -> image 0: 0.8*0.6 + 0.2*0.3 = 0.54 for class 0 against 0.46: a outvotes b
    weighted = val_weighted_vote([A, B], [0.8, 0.2])
    assert weighted == pytest.approx(np.array([[0.54, 0.46, 0.0], [0.18, 0.26, 0.56]]))
    assert weighted.argmax(1).tolist() == [0, 2] and weighted.sum(1) == pytest.approx([1, 1])
    assert val_weighted_vote([A, B], [0.7, 0.7]) == pytest.approx(soft_vote([A, B]))   # equal: soft voting
    with pytest.raises(ValueError, match="validation accuracy 0"):
        val_weights([0.0, 0.0])


# -------------------------------------------------------------------------------------- flip TTA
class LeftHalf(nn.Module):
    """Logits from the left half of the image only: its mirror gives other logits."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2 * 4, 3)

    def forward(self, x):                                    # (N, 1, 4, 4) -> (N, 3)
        return self.fc(x[:, 0, :, :2].flatten(1))


def test_flip_tta_is_the_mean_of_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = LeftHalf()
    x = torch.randint(0, 256, (10, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    transform = lambda batch, training: batch.float().div(255).unsqueeze(1)         # noqa: E731
    plain = predict_proba(model, x, transform, "cpu", batch_size=3)
    tta = predict_proba(model, x, transform, "cpu", batch_size=3, flip=True)
    with torch.no_grad():
        inputs = transform(x, False)
        expected = (model(inputs).softmax(1) + model(inputs.flip(-1)).softmax(1)) / 2
        assert plain == pytest.approx(model(inputs).softmax(1).numpy(), abs=1e-6)
    assert tta == pytest.approx(expected.numpy(), abs=1e-6)
    assert np.abs(tta - plain).max() > 1e-3                                    # the flip really changed them
    assert predict_proba(model, x.numpy(), transform, "cpu", batch_size=100) == pytest.approx(plain, abs=1e-6)


# ------------------------------------------------------------------------------------- scoring
def test_score_matches_sklearn():
    rng = np.random.default_rng(0)
    classes = ["zero", "one", "two", "three"]
    probs = rng.dirichlet(np.ones(4), size=50)
    y = rng.integers(0, 3, size=50)                           # class "three" never occurs: still counted
    s = score(probs, y, classes)
    pred = probs.argmax(1)
    labels = [0, 1, 2, 3]
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, labels=labels, average="macro", zero_division=0)
    assert s["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert (s["macro_precision"], s["macro_recall"], s["macro_f1"]) == pytest.approx((prec, rec, f1))
    assert s["loss"] == pytest.approx(log_loss(y, probs, labels=labels))
    assert np.array_equal(s["confusion"], confusion_matrix(y, pred, labels=labels)) and s["n_images"] == 50
    assert s["report"] == classification_report(y, pred, labels=labels, target_names=classes, digits=4,
                                                 zero_division=0)
    assert all(name in s["report"] for name in classes)
    assert s["per_class"]["support"].tolist() == np.bincount(y, minlength=4).tolist()
    with pytest.raises(ValueError, match="do not fit 49 labels"):
        score(probs, y[:49], classes)


def test_effect_sentence_from_the_numbers():
    def row(name, kind, tta, acc):
        return {"row": name, "kind": kind, "tta": tta, "accuracy": acc}
    table = [row("a", "model", "no", 0.90), row("a+flip", "model", "yes", 0.92), row("b", "model", "no", 0.95),
             row("b+flip", "model", "yes", 0.94), row("ensemble_soft", "ensemble", "no", 0.96),
             row("ensemble_soft+flip", "ensemble", "yes", 0.97)]
    assert effect_sentence(table, "test") == (
        "On the test split, ensembling changed accuracy by +1.00 points (`ensemble_soft`, 96.00%) against the best "
        "single model `b` (95.00%); flip TTA changed it by +0.67 points on average over 3 rows "
        "(from -1.00 points to +2.00 points).")
    assert effect_sentence(table[:1] + table[2:3], "val") == ""


# ------------------------------------------------------------------------------ confusion plots
def _png_size(path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])                    # IHDR width, height


def test_many_classes_get_the_reduced_confusion_view(tmp_path):
    emnist = [str(d) for d in range(10)] + [chr(c) for c in range(65, 91)] + [chr(c) for c in range(97, 123)]
    assert len(emnist) == 62 > MANY_CLASSES
    cm = np.diag(np.full(62, 5))
    cm[emnist.index("O"), emnist.index("0")] = 4                              # the classic EMNIST confusion
    cm[emnist.index("l"), emnist.index("1")] = 3
    assert confused_pairs(cm, emnist, top=2) == [("O", "0", 4), ("l", "1", 3)]
    plot_confusion(cm, emnist, tmp_path / "emnist.png", "62 classes")
    names = [f"class_{i}" for i in range(30)]                                  # one block: lowest-recall view
    plot_confusion(np.diag(np.arange(1, 31)) + 1, names, tmp_path / "names.png", "30 classes")
    plot_confusion(np.diag(np.full(10, 5)), [str(d) for d in range(10)], tmp_path / "digits.png", "10 classes")
    # the reduced view is one 11 x 4.5 inch figure at 110 dpi; a full 62x62 matrix would be ~23 inches wide
    assert _png_size(tmp_path / "emnist.png") == _png_size(tmp_path / "names.png") == (1210, 495)
    assert _png_size(tmp_path / "digits.png")[0] < 1210


# ------------------------------------------------------------------------------ trained models
def test_load_trained_rebuilds_the_model_and_names_a_broken_one(tmp_path):
    """A best.pt as kind `train` writes it (meta with `spec`) loads back as the same network with
    its transform; an unreadable one is the engine's one-line UpstreamError."""
    from jobs.models.registry import SmallCNN
    from jobs.training.trained import load_trained
    from pipeline.contract import UpstreamError
    torch.manual_seed(0)
    saved = SmallCNN(10, image_size=8).eval()
    (tmp_path / "old").mkdir()
    meta = {"spec": {"name": "small_cnn", "pretrained": "none", "source": "auto", "kwargs": {}}, "num_classes": 10,
            "resolution": 8, "native": 8, "channels": 1, "model_channels": 1, "normalize": "none"}
    torch.save({"model": saved.state_dict(), "epoch": 3, "val_acc": 0.9, "meta": meta}, tmp_path / "old" / "best.pt")
    ctx = stage_context(tmp_path, "evaluate", {"old": tmp_path / "old"})
    model, transform, meta, best = load_trained(ctx.load_upstream, "old", ctx.log)
    x = torch.randint(0, 256, (4, 8, 8), dtype=torch.uint8)
    assert torch.allclose(transform(x, False), x.float().div(255).unsqueeze(1), atol=1e-6)
    with torch.no_grad():
        assert torch.equal(model(transform(x, False)), saved(transform(x, False)))
    assert not model.training and best["epoch"] == 3 and meta["num_classes"] == 10
    (tmp_path / "old" / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UpstreamError, match="best.pt cannot be read.*stage 'old'"):
        load_trained(ctx.load_upstream, "old", ctx.log)


# ---------------------------------------------------------------------------------------- config
def test_an_ensemble_of_one_model_is_a_config_error():
    with pytest.raises(ConfigError, match=r"needs at least 2 members, got \['train'\]"):
        EvaluateParams(model_stages=["train"], ensembles=["soft"])
    with pytest.raises(ConfigError, match=r"needs at least 2 members, got \['a'\]"):
        EvaluateParams(model_stages=["a", "b"], members=["a"], ensembles=["soft"])
    with pytest.raises(ConfigError, match="'c' is not one of model_stages"):
        EvaluateParams(model_stages=["a", "b"], members=["a", "c"], ensembles=["soft"])
    with pytest.raises(ConfigError, match="'a' is listed twice"):
        EvaluateParams(model_stages=["a", "a"])
    assert EvaluateParams(model_stages=["a", "b"], ensembles=["soft", "val_weighted"], tta=True).split == "test"


# ---------------------------------------------------------------------------- end to end, local
CONFIG = """\
name: ens
seed: 0
resources: {time: "00:10:00", cpus_per_task: 2, mem: 2G}
stages:
  download:
    kind: download
    dataset: digits
  prepare:
    kind: prepare
    needs: [download]
    dataset: digits
    val_fraction: 0.15
    test_fraction: 0.15
  train_a:
    kind: train
    needs: [prepare]
    data_stage: prepare
    model: {name: small_cnn}
    epochs: 4
    lr: 0.003
    log_every: 100
  train_b:
    kind: train
    needs: [prepare]
    data_stage: prepare
    model: {name: small_cnn}
    epochs: 4
    lr: 0.001
    batch_size: 32
    log_every: 100
  evaluate:
    kind: evaluate
    needs: [train_a, train_b, prepare]
    model_stages: [train_a, train_b]
    data_stage: prepare
    ensembles: [soft, val_weighted]
    tta: true
    baseline: train_a
"""
ROWS = ["train_a", "train_a+flip", "train_b", "train_b+flip", "ensemble_soft", "ensemble_soft+flip",
        "ensemble_val_weighted", "ensemble_val_weighted+flip"]


def test_two_models_ensembles_and_tta_on_digits_end_to_end_local(workspace):
    config = write_experiment(workspace["root"], CONFIG, "ens.yaml")
    cli("run", "all", "-c", str(config), *sets(workspace["overrides"]))
    out = workspace["results"] / "ens" / "evaluate"
    rows = {r["row"]: r for r in read_csv(out / "evaluation.csv")}
    assert list(rows) == ROWS
    assert [rows[r]["kind"] for r in ROWS] == ["model"] * 4 + ["ensemble"] * 4
    assert [rows[r]["tta"] for r in ROWS] == ["no", "yes"] * 4
    assert all(0 <= float(r["accuracy"]) <= 1 and r["n_images"] == "269" for r in rows.values())
    # Measured here (2 shared CPU cores, 4 epochs each): both plain ensembles 0.985-0.99; flip TTA costs
    # digits 2-5 points (a mirrored 2 or 3 is no digit), so the bar is for the plain ensembles.
    assert float(rows["ensemble_soft"]["accuracy"]) >= 0.9 and float(rows["ensemble_val_weighted"]["accuracy"]) >= 0.9
    params = int(rows["train_a"]["trainable_params"])
    assert params > 0 and int(rows["ensemble_soft"]["trainable_params"]) == 2 * params   # members' sum
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["rows"]) == set(ROWS) and metrics["split"] == "test"
    assert metrics["test_acc"] == metrics["accuracy"] == metrics["rows"][metrics["best_model"]]["accuracy"]
    weights = metrics["rows"]["ensemble_val_weighted"]["weights"]
    assert sum(weights) == pytest.approx(1) and len(weights) == 2
    report = (out / "classification_report.txt").read_text()
    assert "macro avg" in report and all(f"\n{d:>12} " in report for d in "0123456789")   # digits' class names
    for row in ROWS:
        assert (out / "models" / row / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    fragment = (out / "report.md").read_text()
    assert "| ensemble_val_weighted+flip | ensemble | yes |" in fragment and "flip TTA changed it by" in fragment
    with open(out / "ablation.csv") as f:
        assert [r["stage"] for r in csv.DictReader(f)] == ["train_a", "train_b"]
    # train_b against the baseline train_a, on the same images, from the per-image predictions
    vs = metrics["vs_baseline"]["train_b"]
    assert vs["delta"] == pytest.approx(float(rows["train_b"]["accuracy"]) - float(rows["train_a"]["accuracy"]), abs=1e-4)
    assert vs["only_model_right"] - vs["only_baseline_right"] == round(vs["delta"] * 269) and vs["n_images"] == 269
    assert "#### Against `train_a` on the same test images" in fragment and "Next steps, from these numbers:" in fragment
    gaps = json.loads((workspace["results"] / "ens" / "train_b" / "metrics.json").read_text())["train_val_gap"]
    assert f"| 1 | {100 * json.loads((workspace['results'] / 'ens' / 'train_a' / 'metrics.json').read_text())['train_val_gap'][0]:+.1f} | {100 * gaps[0]:+.1f} |" in fragment


def test_paired_difference_and_next_steps_follow_the_numbers():
    from jobs.evaluation.compare import gap_table, next_steps, paired_difference
    a = np.array([1, 1, 1, 0, 1, 0, 1, 1], bool)
    b = np.array([1, 0, 1, 0, 1, 1, 0, 1], bool)
    diff = paired_difference(a, b)
    d = a.astype(float) - b.astype(float)
    assert diff["delta"] == pytest.approx(0.125) and diff["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(8))
    assert (diff["only_model_right"], diff["only_baseline_right"], diff["n_images"]) == (2, 1, 8)
    curves = {"m": {"train_val_gap": [0.01, 0.12], "val_acc": [0.5, 0.6]},
              "base": {"train_val_gap": [-0.03, 0.01], "val_acc": [0.4, 0.5]}}
    steps = next_steps("m", "base", diff, curves)
    assert "within 2 standard errors" in steps[0]                  # 12.5 points on 8 images is noise
    assert "`m` overfits (train - val +12.0 points" in steps[1] and "`base` still improved" in steps[2]
    clear = next_steps("m", "base", {"delta": 0.1, "se": 0.01}, {})
    assert clear == ["`m` vs `base`: +10.00 points is beyond 2 standard errors: `m` is better here; "
                     "confirm on the test split"]
    assert gap_table(curves).splitlines()[2] == "| 1 | +1.0 | -3.0 |"
    saturated = next_steps("m", "base", diff, {"m": {"train_val_gap": [0.0], "val_acc": [1.0]}})
    assert "`m` reached 100.0% val accuracy" in saturated[1]
