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


# ---------------------------------------------------------------------------------------------
# Colour and grey batches for kind `train` (issue 8): one transform from (data channels, model
# channels, resolution, normalisation, augmentation list), with a summary for the log.
# ---------------------------------------------------------------------------------------------

AUGMENTATIONS = ("crop_pad", "hflip", "color_jitter", "rotate", "resized_crop")
NORMALIZATIONS = ("imagenet", "dataset", "none")
CROP_PAD = 4                  # pixels, the CIFAR recipe (He et al. 2016)
JITTER = 0.4                  # brightness/contrast/saturation factor in [1 - 0.4, 1 + 0.4], torchvision's usual
ROTATE_DEG = 15.0
RESIZED_CROP_AREA = (0.35, 1.0)   # share of the image's area kept by resized_crop
_LUMA = (0.299, 0.587, 0.114)     # ITU-R BT.601, as jobs/splits.to_grey


def channel_stats(x: torch.Tensor, model_channels: int, limit: int = 10_000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, H, W) or (N, H, W, 3) in [0, 1], after the
    model's channel conversion; from the first `limit` images (normalise: dataset)."""
    sample = _to_channels(_as_nchw(x[:limit]), model_channels)
    return sample.mean(dim=(0, 2, 3)).tolist(), sample.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()


def _as_nchw(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float (N, C, H, W) in [0, 1]."""
    x = x.float().div_(255)
    return x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)


def _to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)                      # grey copied to every channel
    if channels == 1:
        return (x * x.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    raise ValueError(f"cannot turn {x.shape[1]}-channel images into {channels}-channel input")


class BatchTransform:
    """`prepare(uint8 batch, training) -> float (N, C, R, R)` on the batch's device. Data channels
    1 (N, H, W) or 3 (N, H, W, 3); model channels 3 (grey copied) or 1 (BT.601 luminance);
    resolution 0 = native; augmentations (training only) in the order listed; then normalise."""

    def __init__(self, channels: int, model_channels: int = 3, resolution: int = 0, native: int = 0,
                 normalize: str = "imagenet", augment: list[str] | tuple = (), mean=None, std=None,
                 generator: torch.Generator | None = None):
        unknown = [a for a in augment if a not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"augment: unknown {unknown}; valid choices: {', '.join(AUGMENTATIONS)}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize: got {normalize!r}; valid choices: {', '.join(NORMALIZATIONS)}")
        self.channels, self.model_channels, self.native = channels, model_channels, native
        self.resolution, self.normalize, self.augment = resolution or native, normalize, list(augment)
        if normalize == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            if model_channels == 1:
                mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        elif normalize == "none":
            mean, std = (0.0,) * model_channels, (1.0,) * model_channels
        elif mean is None or std is None:
            raise ValueError("normalize: dataset needs the training set's mean and std (channel_stats)")
        self.mean, self.std = tuple(mean), tuple(std)
        self.generator = generator

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        x = _to_channels(_as_nchw(x), self.model_channels)                     # (N, C, H, W) in [0, 1]
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.resolution)
        if training:
            for name in self.augment:
                x = getattr(self, f"_{name}")(x)
        mean = x.new_tensor(self.mean).view(1, -1, 1, 1)
        std = x.new_tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std

    def describe(self, training: bool) -> str:
        """One line for the log, e.g. `train: uint8 (N,32,32,3) -> float32 (N,3,32,32), hflip,
        crop_pad(4), resize 32 (native), normalize imagenet`."""
        shape = f"(N,{self.native},{self.native}" + (",3)" if self.channels == 3 else ")")
        r = self.resolution
        steps = [f"uint8 {shape} -> float32 (N,{self.model_channels},{r},{r})"]
        if self.channels != self.model_channels:
            steps.append("grey copied to 3 channels" if self.channels == 1 else "RGB -> grey (BT.601)")
        steps.append(f"resize {r}" + (" (native)" if r == self.native else f" (from {self.native})"))
        if training:
            steps += [self._describe_aug(a) for a in self.augment]
        stats = "" if self.normalize == "none" else \
            f" mean ({', '.join(f'{m:.3f}' for m in self.mean)}) std ({', '.join(f'{s:.3f}' for s in self.std)})"
        steps.append(f"normalize {self.normalize}{stats}")
        return f"{'train' if training else 'val'}: " + ", ".join(steps)

    @staticmethod
    def _describe_aug(name: str) -> str:
        return {"crop_pad": f"crop_pad({CROP_PAD})", "hflip": "hflip(p=0.5)", "color_jitter": f"color_jitter({JITTER})",
                "rotate": f"rotate(+-{ROTATE_DEG:g} deg)",
                "resized_crop": f"resized_crop(area {RESIZED_CROP_AREA[0]}-{RESIZED_CROP_AREA[1]})"}[name]

    def _uniform(self, n: int, low: float, high: float, device) -> torch.Tensor:
        return (torch.rand(n, generator=self.generator) * (high - low) + low).to(device)

    def _hflip(self, x: torch.Tensor) -> torch.Tensor:
        flip = self._uniform(len(x), 0, 1, x.device) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)

    def _crop_pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad by CROP_PAD, then a random crop of the original size per image (one gather)."""
        n, c, h, w = x.shape
        padded = F.pad(x, (CROP_PAD,) * 4)
        oy = torch.randint(0, 2 * CROP_PAD + 1, (n,), generator=self.generator).to(x.device)
        ox = torch.randint(0, 2 * CROP_PAD + 1, (n,), generator=self.generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]     # (N, 1, H, 1)
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]     # (N, 1, 1, W)
        batch = torch.arange(n, device=x.device).view(-1, 1, 1, 1)
        chan = torch.arange(c, device=x.device).view(1, -1, 1, 1)
        return padded[batch, chan, rows, cols]

    def _color_jitter(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        b, c, s = (self._uniform(n, 1 - JITTER, 1 + JITTER, x.device).view(-1, 1, 1, 1) for _ in range(3))
        x = x * b
        grey = _to_channels(x, 1) if x.shape[1] == 3 else x                       # (N, 1, H, W)
        x = (x - grey.mean(dim=(2, 3), keepdim=True)) * c + grey.mean(dim=(2, 3), keepdim=True)
        if x.shape[1] == 3:
            grey = _to_channels(x, 1)
            x = (x - grey) * s + grey
        return x.clamp_(0, 1)

    def _affine(self, x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        n = len(x)
        shift = 1 - scale
        tx, ty = self._uniform(n, -1, 1, x.device) * shift, self._uniform(n, -1, 1, x.device) * shift
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)   # (N, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        limit = math.radians(ROTATE_DEG)
        return self._affine(x, self._uniform(len(x), -limit, limit, x.device), torch.ones(len(x), device=x.device))

    def _resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        side = self._uniform(len(x), *RESIZED_CROP_AREA, x.device).sqrt()     # crop side as a share of the image
        return self._affine(x, torch.zeros(len(x), device=x.device), side)


def transform_from_meta(meta: dict, augment=(), generator: torch.Generator | None = None) -> BatchTransform:
    """The transform a `train` checkpoint was trained with (its meta), for evaluation."""
    return BatchTransform(meta["channels"], meta["model_channels"], meta["resolution"], meta["native"],
                          meta["normalize"], augment, meta.get("mean"), meta.get("std"), generator)
