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


def build_model(name: str, num_classes: int, image_size: int) -> nn.Module:
    if name == "small_cnn":
        return SmallCNN(num_classes, image_size=image_size)
    raise ValueError(f"unknown model {name!r}; valid choices: small_cnn")


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
