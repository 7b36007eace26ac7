"""The model registry (jobs/models/registry.py): project, torchvision and timm models by name, the
head swap whatever the classifier is called, unknown names, checkpoint files, the ImageNet weights
the download stage stages for offline training. CPU, no downloads."""
from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from torch import nn

from jobs.models.registry import (
    SmallCNN,
    create_model,
    find_head,
    list_models,
    replace_head,
    stage_imagenet_weights,
    use_weights_cache,
    write_weights_manifest,
)

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


# ------------------------------------------------------------- weights staged for offline stages
CACHE_VARS = ("TORCH_HOME", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@pytest.fixture
def clean_env(monkeypatch):
    """use_weights_cache sets process-wide variables: monkeypatch puts them back afterwards."""
    for name in CACHE_VARS:
        monkeypatch.delenv(name, raising=False)


def test_use_weights_cache_points_torch_and_hf_at_the_cache(tmp_path, clean_env):
    use_weights_cache(tmp_path, offline=True)
    assert os.environ["TORCH_HOME"] == str(tmp_path) and os.environ["HF_HOME"] == str(tmp_path / "huggingface")
    assert os.environ["HF_HUB_OFFLINE"] == "1" == os.environ["TRANSFORMERS_OFFLINE"]
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    use_weights_cache(tmp_path, offline=False)                      # the download stage may go online
    assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ


def test_local_weights_file_is_staged_and_loaded_offline(tmp_path, clean_env, log, caplog):
    """weights_files: a local state_dict goes to the hub cache under torchvision's file name; an
    offline `pretrained: imagenet` then loads exactly those weights."""
    torch.manual_seed(0)
    source = create_model("resnet18", 1000, log)                    # ImageNet-shaped, random weights
    torch.save(source.state_dict(), tmp_path / "local.pt")
    cache = tmp_path / "cache"
    staged = stage_imagenet_weights("resnet18", cache, str(tmp_path / "local.pt"), log)
    assert staged == [cache / "hub" / "checkpoints" / "resnet18-f37072fd.pth"]
    assert staged[0].read_bytes() == (tmp_path / "local.pt").read_bytes()
    assert "weights of resnet18: staged local file" in caplog.text
    manifest = write_weights_manifest(cache, {"resnet18": staged})
    assert json.loads((cache / "MANIFEST.json").read_text()) == manifest
    entry = manifest["files"]["hub/checkpoints/resnet18-f37072fd.pth"]
    assert entry["model"] == "resnet18" and entry["bytes"] == staged[0].stat().st_size and len(entry["sha256"]) == 64
    use_weights_cache(cache, offline=True)
    model = create_model({"name": "resnet18", "pretrained": "imagenet"}, 62, log)
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model.fc.out_features == 62


def test_weights_manifest_keeps_other_models_entries_as_recorded(tmp_path):
    cache = tmp_path
    (cache / "hub" / "checkpoints").mkdir(parents=True)
    a, b = cache / "hub" / "checkpoints" / "a.pth", cache / "hub" / "checkpoints" / "b.pth"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    write_weights_manifest(cache, {"a": [a]})
    recorded = json.loads((cache / "MANIFEST.json").read_text())["files"]["hub/checkpoints/a.pth"]
    a.write_bytes(b"damaged")                  # another experiment stages b: a's damage must still show
    files = write_weights_manifest(cache, {"b": [b]})["files"]
    assert set(files) == {"hub/checkpoints/a.pth", "hub/checkpoints/b.pth"} and files["hub/checkpoints/a.pth"] == recorded


def test_staging_errors_say_what_to_do(tmp_path, clean_env, log):
    torch.save(create_model("resnet34", 1000, log).state_dict(), tmp_path / "r34.pt")
    with pytest.raises(ValueError, match="weights_files.resnet18: .*r34.pt is not a state_dict of torchvision's "
                                         "resnet18 .*give the file torch.hub would download"):
        stage_imagenet_weights("resnet18", tmp_path / "cache", str(tmp_path / "r34.pt"), log)
    with pytest.raises(FileNotFoundError, match="weights_files.resnet18: .*missing.pt is not a file"):
        stage_imagenet_weights("resnet18", tmp_path / "cache", str(tmp_path / "missing.pt"), log)
    with pytest.raises(ValueError, match="timm keeps weights in the Hugging Face cache's own layout.*model.pretrained"):
        stage_imagenet_weights("resnet10t", tmp_path / "cache", str(tmp_path / "r34.pt"), log)
    with pytest.raises(ValueError, match="'small_cnn' is a project net: it has no ImageNet weights"):
        stage_imagenet_weights("small_cnn", tmp_path / "cache", "", log)
