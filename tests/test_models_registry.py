"""The model registry (jobs/models.py): project, torchvision and timm models by name, the head
swap whatever the classifier is called, unknown names, checkpoint files. CPU, no downloads."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from jobs.models.registry import SmallCNN, create_model, find_head, list_models, replace_head

X32 = torch.randn(2, 3, 32, 32)   # (N, C, H, W): every model here is built and run at 32 px


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO)
    return logging.getLogger("test.models")


def test_project_net_by_name(log):
    model = create_model({"name": "small_cnn", "pretrained": "none"}, 10, log, image_size=8)
    assert isinstance(model, SmallCNN)
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_torchvision_by_name_replaces_fc_and_logs_shapes(log, caplog):
    model = create_model({"name": "resnet18", "pretrained": "none"}, 3, log)
    assert isinstance(model.fc, nn.Linear) and (model.fc.in_features, model.fc.out_features) == (512, 3)
    assert "head fc: in_features=512, out_features=1000 -> in_features=512 out_features=3" in caplog.text
    assert "model resnet18 (torchvision), pretrained: none" in caplog.text
    assert model.eval()(X32).shape == (2, 3)


def test_timm_by_name(log, caplog):
    model = create_model({"name": "resnet10t", "pretrained": "none"}, 5, log)
    assert type(model).__module__.startswith("timm.")
    assert "model resnet10t (timm)" in caplog.text
    assert "head fc: in_features=512, out_features=1000 -> in_features=512 out_features=5" in caplog.text
    assert model.eval()(X32).shape == (2, 5)


def test_explicit_source_and_kwargs(log):
    # resnet18 exists in torchvision and timm: `auto` takes torchvision, `source: timm` the other.
    assert type(create_model({"name": "resnet18"}, 4, log)).__module__.startswith("torchvision.")
    assert type(create_model({"name": "resnet18", "source": "timm"}, 4, log)).__module__.startswith("timm.")
    with pytest.raises(ValueError, match="valid choices: auto, torchvision, timm, project"):
        create_model({"name": "resnet18", "source": "hub"}, 4, log)


def test_head_efficientnet_classifier_sequential(log, caplog):
    model = create_model("efficientnet_b0", 7, log)
    assert find_head(model)[0] == "classifier.1"
    assert isinstance(model.classifier, nn.Sequential) and isinstance(model.classifier[0], nn.Dropout)
    assert (model.classifier[1].in_features, model.classifier[1].out_features) == (1280, 7)
    assert "head classifier.1: in_features=1280, out_features=1000 -> in_features=1280 out_features=7" in caplog.text
    assert model.eval()(X32).shape == (2, 7)


def test_head_timm_vit_head(log, caplog):
    spec = {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2}}
    model = create_model(spec, 3, log)
    assert "head head: in_features=192, out_features=1000 -> in_features=192 out_features=3" in caplog.text
    assert model.eval()(X32).shape == (2, 3)


def test_replace_head_torchvision_vit_heads_and_return_value(log, caplog):
    from torchvision.models.vision_transformer import VisionTransformer
    model = VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=48, mlp_dim=64)
    old, new = replace_head(model, 3, log)
    assert (old, new) == ((48, 1000), (48, 3))
    assert "head heads.head: in_features=48, out_features=1000 -> in_features=48 out_features=3" in caplog.text


def test_unknown_name_lists_close_matches(log):
    with pytest.raises(ValueError) as err:
        create_model({"name": "resnet181"}, 3, log)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("unknown model 'resnet181'; close matches: resnet18 (torchvision)")
    assert "(timm)" in message and "python -m pipeline models" in message
    with pytest.raises(ValueError, match="close matches: small_cnn \\(project\\)"):
        create_model({"name": "small_cnm"}, 3, log)


def test_checkpoint_file_loads_the_same_weights(tmp_path, log, caplog):
    torch.manual_seed(0)
    first = create_model("resnet18", 3, log)
    path = tmp_path / "weights.pt"
    torch.save({"model": first.state_dict(), "epoch": 3}, path)      # best.pt's layout
    torch.manual_seed(1)
    again = create_model({"name": "resnet18", "pretrained": str(path)}, 3, log)
    for (k, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert f"weights from {path}" in caplog.text


def test_checkpoint_file_with_other_head_keeps_backbone(tmp_path, log, caplog):
    torch.manual_seed(0)
    imagenet_like = create_model("resnet18", 1000, log)              # an ImageNet-shaped state_dict
    path = tmp_path / "imagenet.pth"
    torch.save(imagenet_like.state_dict(), path)
    model = create_model({"name": "resnet18", "pretrained": str(path)}, 10, log)
    assert torch.equal(model.layer4[1].conv2.weight, imagenet_like.layer4[1].conv2.weight)
    assert model.fc.out_features == 10
    assert "head kept at random init (shape differs): fc.weight, fc.bias" in caplog.text
    with pytest.raises(FileNotFoundError, match="valid choices: imagenet, none"):
        create_model({"name": "resnet18", "pretrained": str(tmp_path / "missing.pt")}, 10, log)


def test_offline_imagenet_weights_missing_is_one_clear_line(tmp_path, monkeypatch, log):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not in the torch hub cache: .*resnet18-f37072fd.pth is missing"):
        create_model({"name": "resnet18", "pretrained": "imagenet"}, 10, log)
    with pytest.raises(ValueError, match="project net: it has no ImageNet weights"):
        create_model({"name": "small_cnn", "pretrained": "imagenet"}, 10, log)


def test_list_models_from_every_source():
    listing = list_models("resnet1")
    assert set(listing) == {"project", "torchvision", "timm"}
    assert "resnet18" in listing["torchvision"] and "resnet10t" in listing["timm"]
    assert "resnet50" not in listing["torchvision"]
    assert list_models("small_*")["project"] == ["small_cnn"]
    assert "small_cnn" in list_models()["project"]
