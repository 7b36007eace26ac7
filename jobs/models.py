"""Model builders used by the training stages."""
from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks and a small head; sized for 8x8 to 32x32 greyscale images."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32, image_size: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                                              # (N, 2w, H/2, W/2)
        )
        flat = 2 * width * (image_size // 2) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(flat, 128),
                                  nn.ReLU(inplace=True), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes)
        return self.head(self.features(x))


MODELS = ("small_cnn", "resnet18")


def build_model(name: str, num_classes: int, image_size: int) -> nn.Module:
    """A freshly initialised model; pretrained weights are loaded by the caller."""
    if name == "small_cnn":
        return SmallCNN(num_classes, image_size=image_size)
    if name == "resnet18":
        from torchvision.models import resnet18
        model = resnet18(weights=None)
        model.fc = nn.Linear(model.fc.in_features, num_classes)      # 512 -> classes
        return model
    raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(MODELS)}")


# Which parameters each fine-tuning regime trains (ResNet names: layer1..layer4, fc).
REGIMES = {"linear_probe": ("fc",), "partial": ("layer4", "fc"), "full": None}


def set_trainable(model: nn.Module, regime: str) -> None:
    """Freeze everything outside the regime's modules; None means train all."""
    prefixes = REGIMES[regime]
    for name, param in model.named_parameters():
        param.requires_grad = prefixes is None or name.split(".")[0] in prefixes


def load_backbone(model: nn.Module, state: dict) -> list[str]:
    """Load ImageNet weights except the classifier head (a different number of classes)."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("fc.") for k in missing):
        raise ValueError(f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return missing


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
