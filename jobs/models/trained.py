"""Trained models back from an upstream stage's best.pt: the same network and the same input
transform it was trained with, ready for inference."""
from __future__ import annotations

import logging

from torch import nn


def rebuild_model(meta: dict, log: logging.Logger) -> nn.Module:
    """The model a `train` stage saved: its spec (no pretrained weights: best.pt has them all) and
    its surgery steps in order, freeze skipped (it changes no module, only what trains)."""
    from jobs.models.registry import create_model
    from jobs.models.surgery import apply_surgery
    model = create_model({**meta["spec"], "pretrained": "none"}, meta["num_classes"], log,
                         image_size=meta["resolution"])
    apply_surgery(model, [s for s in meta.get("surgery", []) if "freeze" not in s], log)
    return model


def load_trained(ctx, stage: str):
    """(model in eval mode on the CPU, input transform, meta, the whole best.pt) of upstream `stage`.
    A best.pt that cannot be read becomes the engine's one-line UpstreamError (ctx.load_upstream)."""
    import torch

    from jobs.training.loop import BEST_CHECKPOINT
    from jobs.training.transforms import transform_from_meta
    best = ctx.load_upstream(stage, BEST_CHECKPOINT, lambda path: torch.load(path, map_location="cpu", weights_only=False))
    meta = best["meta"]
    if "spec" in meta:                       # written by kind `train`: registry model + surgery
        model, transform = rebuild_model(meta, ctx.log), transform_from_meta(meta)
    else:
        model, transform = _legacy_model(meta)
    model.load_state_dict(best["model"])
    return model.eval(), transform, meta, best


def _legacy_model(meta: dict):
    """best.pt files left by the removed kinds finetune and train_classifier (meta without `spec`):
    model by name and their own transform. Goes with registry.build_model and
    transforms.make_prepare, once no such results are kept (every new model comes from `train`)."""
    from jobs.models.registry import build_model
    from jobs.training.transforms import make_prepare
    return build_model(meta["model"], meta["num_classes"], meta["image_size"]), make_prepare(meta)
