"""Kind `train` (jobs/train_stage.py) and what it added to the shared loop and the batch
transforms: label smoothing, MixUp/CutMix, the step schedule, Adam; colour/grey batch
transforms; one local run download -> prepare -> train (resnet18 + activation surgery) -> evaluate."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import cli, sets
from fixtures import write_cifar10_three
from jobs.training.loop import TrainParams, make_loss, make_optimizer, make_scheduler, mix_batch, mixed_loss
from jobs.training.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, channel_stats


# ------------------------------------------------------------------------------------- the loss
def _tiny_batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 0, 1])   # logits (N, 4), targets


def test_label_smoothing_loss_value():
    logits, y = _tiny_batch()
    eps = 0.1
    logp = F.log_softmax(logits, 1)
    expected = ((1 - eps) * -logp[torch.arange(6), y] + eps * -logp.mean(1)).mean()
    assert torch.isclose(make_loss(TrainParams(label_smoothing=eps))(logits, y), expected, atol=1e-6)
    assert torch.isclose(make_loss(TrainParams())(logits, y), F.cross_entropy(logits, y))


def test_mixup_is_the_lam_weighted_mix_of_two_targets():
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8)                                                     # label i = image i: yb names the partner
    p = TrainParams(mixup_alpha=0.4)
    mixed, ya, yb, lam = mix_batch(x, y, p, torch.Generator().manual_seed(5))
    again = mix_batch(x, y, p, torch.Generator().manual_seed(5))          # a fixed generator: the same draw
    assert again[3] == lam and torch.equal(again[0], mixed) and torch.equal(again[2], yb)
    assert 0 < lam < 1 and torch.equal(ya, y) and sorted(yb.tolist()) == list(range(8))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[yb], atol=1e-6)
    logits = torch.randn(8, 8, generator=torch.Generator().manual_seed(2))
    loss = mixed_loss(nn.CrossEntropyLoss(), logits, ya, yb, lam)
    assert torch.isclose(loss, lam * F.cross_entropy(logits, ya) + (1 - lam) * F.cross_entropy(logits, yb))
    smooth = mixed_loss(make_loss(TrainParams(label_smoothing=0.1)), logits, ya, yb, lam)
    assert torch.isclose(smooth, lam * F.cross_entropy(logits, ya, label_smoothing=0.1)
                         + (1 - lam) * F.cross_entropy(logits, yb, label_smoothing=0.1))
    assert mix_batch(x, y, TrainParams(), None)[3] == 1.0                   # off: the batch as it is


def test_cutmix_pastes_a_box_and_lam_is_its_area_share():
    x = torch.zeros(4, 1, 10, 10)
    x[:] = torch.arange(4).float().view(4, 1, 1, 1)                          # image i is all i
    y = torch.arange(4)
    mixed, ya, yb, lam = mix_batch(x, y, TrainParams(cutmix_alpha=1.0), torch.Generator().manual_seed(3))
    for i in range(4):
        own = (mixed[i] == i).float().mean().item()
        if yb[i] != ya[i]:
            assert own == pytest.approx(lam) and ((mixed[i] == yb[i]) | (mixed[i] == i)).all()


# -------------------------------------------------------------------- optimizer and schedule
def test_step_schedule_lr_values_and_adam():
    model = nn.Linear(2, 2)
    p = TrainParams(optimizer="adam", lr=0.1, schedule="step", step_size=2, gamma=0.5, epochs=6)
    opt = make_optimizer(model.parameters(), p)
    assert type(opt) is torch.optim.Adam and opt.defaults["weight_decay"] == p.weight_decay
    steps_per_epoch = 3
    sched = make_scheduler(opt, p, steps_per_epoch)
    per_epoch = []
    for _ in range(p.epochs):
        per_epoch.append(opt.param_groups[0]["lr"])
        for _ in range(steps_per_epoch):
            opt.step()
            sched.step()
    assert per_epoch == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert type(make_optimizer(model.parameters(), TrainParams())) is torch.optim.AdamW   # default unchanged


# ------------------------------------------------------------------------------ batch transform
def test_transform_colour_shape_dtype_and_imagenet_values():
    x = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    x[1] = 0
    t = BatchTransform(channels=3, model_channels=3, resolution=16, native=8, normalize="imagenet")
    out = t(x, False)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32
    for c in range(3):
        assert out[0, c].allclose(torch.tensor((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))
        assert out[1, c].allclose(torch.tensor(-IMAGENET_MEAN[c] / IMAGENET_STD[c]))
    assert t.describe(False) == ("val: uint8 (N,8,8,3) -> float32 (N,3,16,16), resize 16 (from 8), normalize "
                                 "imagenet mean (0.485, 0.456, 0.406) std (0.229, 0.224, 0.225)")


def test_transform_grey_to_three_and_dataset_and_none_normalisation():
    x = torch.randint(0, 256, (20, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = channel_stats(x, 3)
    assert len(mean) == 3 and mean[0] == pytest.approx(x.float().div(255).mean().item(), abs=1e-5)
    out = BatchTransform(1, 3, 0, 6, "dataset", mean=mean, std=std)(x, False)
    assert out.shape == (20, 3, 6, 6) and torch.equal(out[:, 0], out[:, 2])
    assert out.mean().item() == pytest.approx(0, abs=1e-5) and out.std().item() == pytest.approx(1, abs=1e-2)
    raw = BatchTransform(1, 1, 0, 6, "none")(x, False)
    assert raw.shape == (20, 1, 6, 6) and torch.allclose(raw[:, 0], x.float() / 255)
    rgb = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    rgb[..., 1] = 255                                                         # pure green -> BT.601 0.587
    assert BatchTransform(3, 1, 0, 2, "none")(rgb, False).allclose(torch.tensor(0.587))


def test_hflip_flips_some_images_in_training_only():
    x = torch.randint(0, 256, (64, 5, 5, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    t = BatchTransform(3, 3, 0, 5, "none", ["hflip"], generator=torch.Generator().manual_seed(0))
    plain, aug = t(x, False), t(x, True)
    flipped = (aug == plain.flip(-1)).flatten(1).all(1)
    same = (aug == plain).flatten(1).all(1)
    assert (flipped | same).all() and 10 < int(flipped.sum()) < 54           # about half of 64
    assert torch.equal(t(x, False), plain)


def test_crop_pad_shifts_within_the_padding():
    x = torch.zeros(32, 9, 9, dtype=torch.uint8)
    x[:, 4, 4] = 255                                                        # one bright pixel in the middle
    out = BatchTransform(1, 1, 0, 9, "none", ["crop_pad"], generator=torch.Generator().manual_seed(0))(x, True)
    assert out.shape == (32, 1, 9, 9)
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert ((rows - 4).abs() <= 4).all() and ((cols - 4).abs() <= 4).all() and len(set(pos.tolist())) > 5


def test_unknown_augmentation_lists_the_choices():
    with pytest.raises(ValueError, match="valid choices: crop_pad, hflip, color_jitter, rotate, resized_crop"):
        BatchTransform(3, 3, 0, 8, "none", ["cutout"])


# ---------------------------------------------------------------------------- end to end, local
CONFIG = """\
name: train3
seed: 0
resources: {time: "00:10:00", cpus_per_task: 2, mem: 2G}
stages:
  download:
    kind: download
    dataset: cifar10
  prepare:
    kind: prepare
    needs: [download]
    dataset: cifar10
    classes: [cat, dog, airplane]
    val_fraction: 0.2
  train:
    kind: train
    needs: [prepare]
    model: {name: resnet18, pretrained: none}
    resolution: 32
    surgery:
      - replace_activation: {type: ReLU, with: SiLU, start: 7}
    augment: [hflip, crop_pad]
    normalize: imagenet
    optimizer: adam
    lr: 0.001
    schedule: step
    step_size: 2
    gamma: 0.5
    epochs: 3
    batch_size: 32
    log_every: 100
  evaluate:
    kind: evaluate
    needs: [train, prepare]
    model_stages: [train]
    data_stage: prepare
"""


def test_train_kind_resnet18_surgery_end_to_end_local(workspace):
    """CIFAR-10-format fixture (cat, dog, airplane; colour 32x32) -> resnet18 from random init at
    32 px, ReLU -> SiLU from the 7th instance, Adam, step schedule -> evaluate rebuilds it."""
    write_cifar10_three(workspace["data"] / "cifar10")
    config = workspace["root"] / "train3.yaml"
    config.write_text(CONFIG)
    cli("submit", "all", "-c", str(config), "--executor", "local", *sets(workspace["overrides"]))
    results, logs = workspace["results"] / "train3", workspace["logs"] / "train3"
    log = next((logs / "train").glob("*.log")).read_text()
    assert "ReLU remaining: 6" in log and "SiLU inserted: 3" in log
    assert "in_features=512 out_features=3" in log
    assert ("transform train: uint8 (N,32,32,3) -> float32 (N,3,32,32), resize 32 (native), hflip(p=0.5), "
            "crop_pad(4), normalize imagenet") in log
    assert "transform val: uint8 (N,32,32,3) -> float32 (N,3,32,32), resize 32 (native), normalize imagenet" in log
    assert "one batch: x (8, 32, 32, 3) uint8 -> input (8, 3, 32, 32) float32" in log
    assert "pretrained: none (random init" in log and "deterministic_algorithms=True" in log
    assert log.count("Epoch ") >= 3 and "Epoch 3/3 | Train Loss: " in log and "| Val Acc: " in log
    history = json.loads((results / "train" / "history.json").read_text())
    assert [h["lr"] for h in history] == pytest.approx([1e-3, 5e-4, 5e-4])   # step 2, gamma 0.5, after each epoch
    best = torch.load(results / "train" / "best.pt", map_location="cpu", weights_only=False)
    meta = best["meta"]
    assert meta["spec"]["name"] == "resnet18" and meta["num_classes"] == 3 and meta["channels"] == 3
    assert meta["classes"] == ["cat", "dog", "airplane"] and meta["resolution"] == 32
    acct = json.loads((results / "train" / "accounting.json").read_text())
    assert acct["epochs"] == 3 and acct["samples_per_epoch"] == 240 and acct["total_params"] == 11_178_051
    assert acct["trainable_params"] == acct["total_params"] and acct["precision"] == "fp32"
    assert (results / "train" / "curves.png").exists() and "resnet18" in (results / "train" / "report.md").read_text()
    ev_log = next((logs / "evaluate").glob("*.log")).read_text()
    assert "SiLU inserted: 3" in ev_log                                       # evaluate rebuilt the surgery
    metrics = json.loads((results / "evaluate" / "metrics.json").read_text())
    assert metrics["test_size"] == 120 and set(metrics["models"]) == {"train"}
    # Measured here (2 CPU cores, this colour fixture, 3 epochs): test acc 1.000 with seeds 0, 1 and 2 (val acc
    # 1.0 from epoch 1 or 2); the class tints make it easy. The bar leaves room for other CPUs' numerics.
    assert metrics["models"]["train"]["test_acc"] >= 0.9 and metrics["test_acc"] >= 0.9
    assert (results / "evaluate" / "models" / "train" / "per_class.csv").exists()

