"""Batch transforms on the training device: uint8 grey or colour batches -> model input.

One transform from (data channels, model channels, resolution, normalisation, augmentation list),
with a summary for the log. Resizing, the 1->3 channel copy, normalisation and augmentation happen
on whole batches in a few tensor ops, instead of per sample with PIL in DataLoader workers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("crop_pad", "hflip", "color_jitter", "rotate", "resized_crop")
NORMALIZATIONS = ("imagenet", "dataset", "mean_image", "none")
PIXEL_SCALE = 255.0           # mean_image works in pixel units, as the practical's cifar10_utils
CROP_PAD = 4                  # pixels, the CIFAR recipe (He et al. 2016)
JITTER = 0.4                  # brightness/contrast/saturation factor in [1 - 0.4, 1 + 0.4], torchvision's usual
ROTATE_DEG = 15.0                 # default angle limit of rotate, in degrees either way
RESIZED_CROP_AREA = (0.35, 1.0)   # default share of the image's area kept by resized_crop
GEOMETRIC = ("rotate", "resized_crop")   # resampled together with the resize (BatchTransform._warp)
_LUMA = (0.299, 0.587, 0.114)     # ITU-R BT.601, as jobs/data/splits.py to_grey


def channel_stats(x: torch.Tensor, model_channels: int, limit: int = 10_000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, H, W) or (N, H, W, 3) in [0, 1], after the
    model's channel conversion; from the first `limit` images (normalise: dataset)."""
    sample = _to_channels(_as_nchw(x[:limit]), model_channels)
    return sample.mean(dim=(0, 2, 3)).tolist(), sample.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()


def mean_image(x: torch.Tensor, model_channels: int, chunk: int = 5_000) -> list:
    """The training set's mean image (C, H, W) in [0, 1], after the model's channel conversion,
    summed in chunks (a whole CIFAR training set as float would be 600 MB). normalize: mean_image."""
    total = None
    for start in range(0, len(x), chunk):
        part = _to_channels(_as_nchw(x[start:start + chunk]), model_channels).double().sum(0)
        total = part if total is None else total + part
    return (total / len(x)).float().tolist()


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
    resolution 0 = native; augmentations (training only); then normalise. rotate and resized_crop
    (magnitudes: rotate_deg, crop_area) come first, composed with the resize into one resampling:
    each extra bilinear pass blurs training images that validation sees sharp (on the EMNIST
    fixture, unfreeze val acc 0.84 with three passes vs 0.92 with one). The others follow in order."""

    def __init__(self, channels: int, model_channels: int = 3, resolution: int = 0, native: int = 0,
                 normalize: str = "imagenet", augment: list[str] | tuple = (), mean=None, std=None,
                 generator: torch.Generator | None = None, rotate_deg: float = ROTATE_DEG,
                 crop_area: tuple[float, float] = RESIZED_CROP_AREA):
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
        elif normalize == "mean_image":
            # The practical's preprocessing: pixels (0..255) minus the training set's mean image, no scaling.
            self.mean_image = torch.tensor(mean, dtype=torch.float32)           # (C, H, W) in [0, 1]
            if tuple(self.mean_image.shape) != (model_channels, self.resolution, self.resolution):
                raise ValueError(f"normalize: mean_image is {tuple(self.mean_image.shape)}, the input is "
                                 f"({model_channels}, {self.resolution}, {self.resolution}); it needs the native "
                                 f"resolution (resolution: 0)")
            mean, std = self.mean_image.mean(dim=(1, 2)).tolist(), (1 / PIXEL_SCALE,) * model_channels
        elif mean is None or std is None:
            raise ValueError("normalize: dataset needs the training set's mean and std (channel_stats)")
        self.mean, self.std = tuple(mean), tuple(std)
        self.generator = generator
        self.rotate_deg, self.crop_area = float(rotate_deg), (float(crop_area[0]), float(crop_area[1]))
        if not 0 < self.crop_area[0] <= self.crop_area[1] <= 1:
            raise ValueError(f"crop_area: got {list(crop_area)}; expected [min, max] with 0 < min <= max <= 1")

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        x = _to_channels(_as_nchw(x), self.model_channels)                     # (N, C, H, W) in [0, 1]
        augment = self.augment if training else []
        warp = [a for a in augment if a in GEOMETRIC]
        size, side = tuple(x.shape[-2:]), self.resolution
        if max(size) > side or (not warp and size != (side, side)):
            # Downsizing happens here, antialiased (grid sampling would alias); upsizing goes with the warp.
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=max(size) > side)
        if warp:
            x = self._warp(x, warp)                                            # (N, C, R, R)
        for name in augment:
            if name not in GEOMETRIC:
                x = getattr(self, f"_{name}")(x)
        if self.normalize == "mean_image":
            return (x - self.mean_image.to(x.device)) * PIXEL_SCALE
        mean = x.new_tensor(self.mean).view(1, -1, 1, 1)
        std = x.new_tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std

    def describe(self, training: bool) -> str:
        """One line for the log, e.g. `train: uint8 (N,32,32,3) -> float32 (N,3,32,32), resize 32
        (native), hflip(p=0.5), crop_pad(4), normalize imagenet mean (...) std (...)`."""
        shape = f"(N,{self.native},{self.native}" + (",3)" if self.channels == 3 else ")")
        r = self.resolution
        steps = [f"uint8 {shape} -> float32 (N,{self.model_channels},{r},{r})"]
        if self.channels != self.model_channels:
            steps.append("grey copied to 3 channels" if self.channels == 1 else "RGB -> grey (BT.601)")
        resize = f"resize {r}" + (" (native)" if r == self.native else f" (from {self.native})")
        warp = [self._describe_aug(a) for a in self.augment if training and a in GEOMETRIC]
        steps.append(f"{resize} with {', '.join(warp)} in one resampling" if warp else resize)
        if training:
            steps += [self._describe_aug(a) for a in self.augment if a not in GEOMETRIC]
        stats = " (pixels 0..255 minus the training mean image, no scaling)" if self.normalize == "mean_image" else \
            "" if self.normalize == "none" else \
            f" mean ({', '.join(f'{m:.3f}' for m in self.mean)}) std ({', '.join(f'{s:.3f}' for s in self.std)})"
        steps.append(f"normalize {self.normalize}{stats}")
        return f"{'train' if training else 'val'}: " + ", ".join(steps)

    def _describe_aug(self, name: str) -> str:
        return {"crop_pad": f"crop_pad({CROP_PAD})", "hflip": "hflip(p=0.5)", "color_jitter": f"color_jitter({JITTER})",
                "rotate": f"rotate(+-{self.rotate_deg:g} deg)",
                "resized_crop": f"resized_crop(area {self.crop_area[0]:g}-{self.crop_area[1]:g})"}[name]

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

    def _warp(self, x: torch.Tensor, ops: list[str]) -> torch.Tensor:
        """The geometric augmentations, in list order, and the resize to `resolution` as one
        bilinear resampling (zeros outside the image, as torchvision's rotation fills)."""
        n = len(x)
        theta = torch.eye(3, device=x.device).repeat(n, 1, 1)                # output -> input coordinates
        for name in ops:
            theta = theta @ getattr(self, f"_{name}_matrix")(n, x.device)
        grid = F.affine_grid(theta[:, :2], [n, x.shape[1], self.resolution, self.resolution], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _rotate_matrix(self, n: int, device) -> torch.Tensor:
        limit = math.radians(self.rotate_deg)
        zero = torch.zeros(n, device=device)
        return _affine_matrix(self._uniform(n, -limit, limit, device), torch.ones(n, device=device), zero, zero)

    def _resized_crop_matrix(self, n: int, device) -> torch.Tensor:
        side = self._uniform(n, *self.crop_area, device).sqrt()              # crop side as a share of the image
        tx, ty = (self._uniform(n, -1, 1, device) * (1 - side) for _ in range(2))   # the crop stays inside
        return _affine_matrix(torch.zeros(n, device=device), side, tx, ty)


def _affine_matrix(angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) homogeneous maps from output to input coordinates in [-1, 1] (affine_grid's theta)."""
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1),
                        torch.stack([zero, zero, one], 1)], 1)


def transform_from_meta(meta: dict, augment=(), generator: torch.Generator | None = None) -> BatchTransform:
    """The transform a `train` checkpoint was trained with (its meta), for evaluation."""
    return BatchTransform(meta["channels"], meta["model_channels"], meta["resolution"], meta["native"],
                          meta["normalize"], augment, meta.get("mean"), meta.get("std"), generator,
                          meta.get("rotate_deg", ROTATE_DEG), meta.get("crop_area", RESIZED_CROP_AREA))


def identity(x: torch.Tensor, training: bool) -> torch.Tensor:
    """The input as it is: for inputs that are already features (the cached-features head fit)."""
    return x
