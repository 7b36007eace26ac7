"""Model surgery (jobs/surgery.py): freeze regimes, activation swap, Squeeze-and-Excitation, and
the config form that applies them in order. Exact counts; CPU at 32 px."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from jobs.models.registry import count_params, create_model
from jobs.models.surgery import (
    SqueezeExcite,
    add_se,
    apply_surgery,
    freeze,
    last_stage,
    replace_activation,
    se_params,
)

X32 = torch.randn(2, 3, 32, 32)   # (N, C, H, W)


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO)
    return logging.getLogger("test.surgery")


@pytest.fixture(scope="module")
def resnet18_62():
    """torchvision resnet18 with EMNIST ByClass's 62-class head, random weights."""
    torch.manual_seed(0)
    return create_model({"name": "resnet18", "pretrained": "none"}, 62)


# The EMNIST counts in README: fc 512*62+62; + layer4; everything.
@pytest.mark.parametrize("regime, trainable", [("head", 31_806), ("last_block", 8_425_534), ("none", 11_208_318)])
def test_freeze_resnet18_emnist_counts(resnet18_62, regime, trainable, log, caplog):
    model = copy.deepcopy(resnet18_62)
    summary = freeze(model, regime, log)
    assert (summary["trainable"], summary["total"]) == (trainable, 11_208_318)
    assert count_params(model) == (trainable, 11_208_318)
    assert f"trainable params {trainable:,} of 11,208,318" in caplog.text


def test_freeze_regimes_name_what_trains(resnet18_62, log):
    model = copy.deepcopy(resnet18_62)
    assert freeze(model, "head", log)["trained"] == ["fc"]
    assert freeze(model, "last_block", log)["trained"] == ["layer4", "fc"]
    assert freeze(model, ["layer3", "fc"], log)["trainable"] == 2_099_712 + 31_806   # layer3 + fc
    with pytest.raises(ValueError, match="no parameters under \\['layer9'\\]"):
        freeze(model, ["layer9"], log)
    with pytest.raises(ValueError, match="valid choices: head, last_block, none"):
        freeze(model, "backbone", log)


def test_freeze_last_block_timm_and_efficientnet(log):
    timm_resnet = create_model("resnet10t", 5, log)
    summary = freeze(timm_resnet, "last_block", log)
    layer4 = sum(p.numel() for p in timm_resnet.layer4.parameters())
    assert summary["trained"] == ["layer4", "fc"] and summary["trainable"] == layer4 + 512 * 5 + 5
    assert all(p.requires_grad == n.startswith(("layer4.", "fc.")) for n, p in timm_resnet.named_parameters())

    vit = create_model({"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32, "patch_size": 8, "depth": 3}},
                       3, log)
    assert last_stage(vit) == "blocks.2"
    assert freeze(vit, "last_block", log)["trained"] == ["blocks.2", "norm", "head"]

    effnet = create_model("efficientnet_b0", 3, log)
    assert last_stage(effnet) == "features.8"
    assert freeze(effnet, "last_block", log)["trainable"] == (320 * 1280 + 2 * 1280) + (1280 * 3 + 3)


def test_replace_activation_resnet18_from_7th(resnet18_62, log, caplog):
    # resnet18 has 9 nn.ReLU instances (stem + one per BasicBlock, which calls it twice: 17 calls).
    model = copy.deepcopy(resnet18_62)
    summary = replace_activation(model, type="ReLU", with_="SiLU", start=7, log=log)
    assert (summary["before"], summary["remaining"], summary["inserted"]) == (9, 6, 3)
    assert summary["replaced_indices"] == [7, 8, 9]
    assert summary["replaced"] == ["layer3.1.relu", "layer4.0.relu", "layer4.1.relu"]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 6
    assert sum(isinstance(m, nn.SiLU) for m in model.modules()) == 3
    assert isinstance(model.layer3[0].relu, nn.ReLU) and isinstance(model.layer3[1].relu, nn.SiLU)
    for line in ("9 ReLU module instances before", "replaced indices (1-based): 7-9 = layer3.1.relu",
                 "ReLU remaining: 6", "SiLU inserted: 3"):
        assert line in caplog.text
    with torch.no_grad():
        swapped, original = model.eval()(X32), copy.deepcopy(resnet18_62).eval()(X32)
    assert swapped.shape == original.shape == (2, 62)
    assert not torch.allclose(swapped, original)


def test_replace_activation_edges(log):
    model = create_model("resnet10t", 3, log)    # timm: act modules, stem has two more
    summary = replace_activation(model, "ReLU", "GELU", start=1, log=log)
    assert (summary["before"], summary["remaining"], summary["inserted"]) == (11, 0, 3 + 8)
    assert replace_activation(model, "GELU", "SiLU", start=50, log=log)["inserted"] == 0
    with pytest.raises(ValueError, match="not a torch.nn module"):
        replace_activation(model, "ReLU", "Swish", start=1, log=log)
    shared = nn.ReLU()                            # one instance registered twice counts once
    net = nn.Sequential(nn.Linear(2, 2), shared, nn.Linear(2, 2), shared)
    summary = replace_activation(net, "ReLU", "SiLU", start=1, log=log)
    assert (summary["before"], summary["inserted"]) == (1, 1) and net[1] is net[3] and isinstance(net[3], nn.SiLU)


def test_se_features_resnet18(resnet18_62, log, caplog):
    model = copy.deepcopy(resnet18_62)
    summary = add_se(model, reduction=16, where="features", log=log)
    assert summary["params_added"] == se_params(512, 16) == 2 * 512 * 32 + 32 + 512 == 33_312
    assert isinstance(model.layer4, nn.Sequential) and isinstance(model.layer4[1], SqueezeExcite)
    assert "+33,312" in caplog.text
    assert model.eval()(X32).shape == (2, 62)


def test_se_blocks_resnet18(resnet18_62, log):
    model = copy.deepcopy(resnet18_62)
    summary = add_se(model, reduction=16, where="blocks", log=log)
    widths = [64, 64, 128, 128, 256, 256, 512, 512]          # two BasicBlocks per stage
    assert summary["count"] == 8
    assert summary["params_added"] == sum(se_params(c, 16) for c in widths) == 89_080
    assert summary["at"][0] == "layer1.0.bn2.se" and isinstance(model.layer1[0].bn2.se, SqueezeExcite)
    assert "layer1.0.bn2.0.weight" in model.state_dict()          # the BN keeps its key (ImageNet weights fit)
    assert model.eval()(X32).shape == (2, 62)
    # `*.se` in a freeze list trains every SE wherever it is: here with layer4 and the head.
    report = freeze(model, ["layer4", "fc", "*.se"], log)
    trained = {n for n, q in model.named_parameters() if q.requires_grad}
    assert all(".se." in n or n.startswith(("layer4.", "fc.")) for n in trained)
    assert {n for n in trained if ".se." in n and not n.startswith("layer4.")}     # SE outside layer4 trains too
    assert report["trainable"] == sum(q.numel() for n, q in model.named_parameters() if n in trained)


def test_se_gate_is_a_channel_gate():
    se = SqueezeExcite(8, reduction=4)
    x = torch.randn(3, 8, 5, 5)
    gate = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean(dim=(2, 3))))))
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def test_apply_surgery_in_config_order(log, caplog):
    torch.manual_seed(0)
    model = create_model("resnet18", 10, log)
    steps = [{"replace_activation": {"type": "ReLU", "with": "SiLU", "start": 7}},
             {"se": {"reduction": 16, "where": "features"}},
             {"freeze": "last_block"}]
    summaries = apply_surgery(model, steps, log)
    assert [s["op"] for s in summaries] == ["replace_activation", "se", "freeze"]
    layer4 = 8_393_728 + 33_312          # torchvision layer4 + its SE: frozen after the SE is added
    assert summaries[2]["trainable"] == layer4 + 512 * 10 + 10
    assert caplog.text.index("SiLU inserted: 3") < caplog.text.index("se (reduction 16") < caplog.text.index("freeze")
    assert model.eval()(X32).shape == (2, 10)
    with pytest.raises(ValueError, match="each step is one of"):
        apply_surgery(model, [{"prune": 0.5}], log)
