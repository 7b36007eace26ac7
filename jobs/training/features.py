"""Train only the classifier head on backbone features computed once.

When nothing but the head trains and nothing random touches the inputs (no augmentation, no
MixUp/CutMix, no dropout or drop path before the head), every epoch would push the same images
through the same frozen backbone. Computing those features once, in eval mode, and fitting the
head on them with the same `fit` gives the same function at a fraction of the compute: frozen
BatchNorm layers stay in eval mode in the full forward too (loop.train_mode).
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from torch import nn

from jobs.models.registry import find_head
from jobs.training.loop import FitEnv, Prepare, TrainParams, autocast, batches, fit, resolve_device
from jobs.training.transforms import identity

CACHED, FULL = "cached_features", "full_forward"


def cache_blocker(model: nn.Module, p) -> str:
    """Why the head cannot be trained on cached features ('' when it can). `p` holds
    cache_features, augment, mixup_alpha and cutmix_alpha (the train stage's parameters)."""
    if not p.cache_features:
        return "cache_features is off"
    head_path, head = find_head(model)
    in_head = {id(q) for q in head.parameters()}
    outside = [n for n, q in model.named_parameters() if q.requires_grad and id(q) not in in_head]
    if outside:
        return f"{len(outside)} trainable tensors outside the head {head_path} (e.g. {outside[0]})"
    if p.augment:
        return f"augment {list(p.augment)} changes the inputs every epoch"
    if p.mixup_alpha or p.cutmix_alpha:
        return "MixUp/CutMix mix the inputs every batch"
    random = [n for n, m in model.named_modules() if m is not head and _differs_in_training(m)]
    if random:
        return f"{random[0]} computes differently in training mode (dropout, drop path or batch statistics)"
    return ""


def _differs_in_training(module: nn.Module) -> bool:
    """Dropout and drop path draw random numbers in training mode; a BatchNorm without
    parameters keeps normalising with batch statistics there (train_mode only fixes frozen ones)."""
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return not list(module.parameters(recurse=False))
    return getattr(module, "drop_prob", 0) > 0          # timm's DropPath


@contextmanager
def headless(model: nn.Module, head_path: str):
    """The model with its classifier replaced by nn.Identity: it returns the head's input."""
    parent_path, _, name = head_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    head = getattr(parent, name)
    setattr(parent, name, nn.Identity())
    try:
        yield model
    finally:
        setattr(parent, name, head)


@torch.no_grad()
def extract_features(backbone: nn.Module, x: torch.Tensor, prepare: Prepare, device: torch.device,
                     p: TrainParams) -> torch.Tensor:
    """uint8 images (N, ...) -> float32 features (N, D) on `device`, in eval mode."""
    backbone.eval().to(device)
    if p.channels_last:
        backbone.to(memory_format=torch.channels_last)
    out = []
    for idx in batches(len(x), p.batch_size, None):
        inputs = prepare(x[idx].to(device, non_blocking=True), False)
        if p.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast(device, p):
            out.append(backbone(inputs).float())
    return torch.cat(out)


def fit_head_on_features(model: nn.Module, data: dict[str, torch.Tensor], prepare: Prepare, p: TrainParams,
                         env: FitEnv, meta: dict, on_epoch=None) -> dict:
    """Backbone features of train and val once, then the shared loop trains the head on them;
    best.pt holds the whole model (with the head's best epoch), as a full forward run writes it."""
    device = resolve_device(env.device)
    head_path, head = find_head(model)
    started = time.perf_counter()
    with headless(model, head_path):
        features = {f"x_{s}": extract_features(model, data[f"x_{s}"], prepare, device, p) for s in ("train", "val")}
    seconds = time.perf_counter() - started
    env.log.info("cached backbone features: train %s, val %s (head %s's input) in %.1f s",
                 tuple(features["x_train"].shape), tuple(features["x_val"].shape), head_path, seconds)
    head_data = {**features, "y_train": data["y_train"], "y_val": data["y_val"]}
    run = fit(head, head_data, identity, p, env, meta=meta, best_model=model, on_epoch=on_epoch)
    return {**run, "feature_seconds": round(seconds, 3)}
