"""Batch transforms on the training device: uint8 greyscale -> normalised ImageNet-style input.

Resizing, the 1->3 channel copy, normalisation and augmentation happen on whole batches in one
or two tensor ops, instead of per sample with PIL in DataLoader workers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImagenetBatch:
    """Callable `prepare(x_uint8 (N, H, W), training) -> (N, 3, R, R)` float."""

    def __init__(self, resolution: int, augment: bool = False, max_rotation_deg: float = 10.0,
                 min_crop_scale: float = 0.85, generator: torch.Generator | None = None):
        self.resolution, self.augment = resolution, augment
        self.max_rotation, self.min_scale = math.radians(max_rotation_deg), min_crop_scale
        self.generator = generator

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        x = x.float().div_(255).unsqueeze(1)                                  # (N, 1, H, W)
        size = (self.resolution, self.resolution)
        if self.augment and training:
            x = F.grid_sample(x, self._affine_grid(x), mode="bilinear", padding_mode="zeros", align_corners=False)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std                                               # (N, 3, R, R) by broadcasting

    def _affine_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Small random rotation and a modest random resized crop, as one sampling grid that also
        resizes to the output resolution."""
        n = x.shape[0]

        def uniform(low, high):
            return (torch.rand(n, generator=self.generator) * (high - low) + low).to(x.device)
        angle = uniform(-self.max_rotation, self.max_rotation)
        scale = uniform(self.min_scale, 1.0)                 # crop side as a share of the image
        shift = (1 - scale)                                  # keep the crop inside the image
        tx, ty = uniform(-1, 1) * shift, uniform(-1, 1) * shift
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (N, 2, 3)
        return F.affine_grid(theta, [n, 1, self.resolution, self.resolution], align_corners=False)


def grey_batch(x: torch.Tensor, training: bool) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [-1, 1] (the small CNNs' input)."""
    return x.float().div_(127.5).sub_(1.0).unsqueeze(1)


def identity(x: torch.Tensor, training: bool) -> torch.Tensor:
    return x


def make_prepare(meta: dict, augment: bool = False, generator: torch.Generator | None = None):
    """The input transform a checkpoint was trained with, from its meta."""
    if meta.get("input") == "imagenet":
        return ImagenetBatch(meta["resolution"], augment=augment, generator=generator)
    return grey_batch
