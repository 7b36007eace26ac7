"""Vision-transformer backbones for the deployment experiment (torch.hub DINOv2 or timm), a linear
head on the CLS token, and the batch transform they expect."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from jobs.training.transforms import IMAGENET_MEAN, IMAGENET_STD


class Classifier(nn.Module):
    """backbone (N, 3, S, S) -> CLS features (N, D); head -> logits (N, classes)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def set_cache_env(cache_dir: Path, offline: bool) -> None:
    os.environ["TORCH_HOME"] = str(cache_dir)
    os.environ["HF_HOME"] = str(cache_dir / "huggingface")
    if offline:
        os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def build_backbone(meta: dict, cache_dir: Path) -> nn.Module:
    """Offline unless meta['offline'] is False (the download stage): then the caches are filled."""
    offline = meta.get("offline", True)
    set_cache_env(cache_dir, offline)
    if meta["source"] == "hub":
        return _hub_backbone(meta, offline).eval()
    if meta["source"] == "timm":
        import timm
        return timm.create_model(meta["timm_model"], pretrained=meta["timm_pretrained"], num_classes=0,
                                 img_size=meta["img_size"], global_pool="avg" if meta.get("pool") == "avg" else "token",
                                 **meta.get("timm_kwargs", {})).eval()
    raise ValueError(f"unknown model_source {meta['source']!r}; valid choices: hub, timm")


class PatchMean(nn.Module):
    """DINOv2 hub model -> mean of its normalised patch tokens (its forward returns the CLS token)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)["x_norm_patchtokens"].mean(1)


def _hub_backbone(meta: dict, offline: bool) -> nn.Module:
    model = _hub_load(meta, offline)
    return PatchMean(model) if meta.get("pool") == "avg" else model


def _hub_load(meta: dict, offline: bool) -> nn.Module:
    if not offline:
        return torch.hub.load(meta["hub_repo"], meta["hub_model"], trust_repo=True)
    owner, repo = meta["hub_repo"].split("/")
    local = sorted(Path(torch.hub.get_dir()).glob(f"{owner}_{repo}_*"))
    if not local:
        raise FileNotFoundError(f"torch hub repo {meta['hub_repo']} is not in {torch.hub.get_dir()}: "
                                "run the download stage (it fetches the repo and its weights)")
    return torch.hub.load(str(local[-1]), meta["hub_model"], source="local")


def pixels(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, size, size), resized on the batch."""
    x = x.permute(0, 3, 1, 2).float().div_(255)
    if x.shape[-1] != size:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def save_classifier(path: Path, model: Classifier, meta: dict, classes: list[str]) -> None:
    from jobs.training.loop import save_atomic
    save_atomic(path, {"meta": meta, "state": model.state_dict(), "classes": classes,
                       "feature_dim": model.head.in_features})


def load_classifier(path: Path, cache_dir: Path) -> tuple[Classifier, dict]:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    backbone = build_backbone(saved["meta"], cache_dir)
    model = Classifier(backbone, nn.Linear(saved["feature_dim"], len(saved["classes"])))
    model.load_state_dict(saved["state"])
    return model.eval(), saved
