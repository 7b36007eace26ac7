"""Trained models back from an upstream stage's best.pt: the same network and the same input
transform it was trained with, ready for inference."""
from __future__ import annotations

import logging

from torch import nn

from jobs.data.files import UpstreamReader
from jobs.training.loop import BEST_CHECKPOINT, read_checkpoint
from jobs.training.transforms import BatchTransform, transform_from_meta


def rebuild_model(meta: dict, log: logging.Logger) -> nn.Module:
    """The model a `train` stage saved: its spec (no pretrained weights: best.pt has them all) and
    its surgery steps in order, freeze skipped (it changes no module, only what trains)."""
    from jobs.models.registry import create_model
    from jobs.models.surgery import apply_surgery
    model = create_model({**meta["spec"], "pretrained": "none"}, meta["num_classes"], log,
                         image_size=meta["resolution"])
    apply_surgery(model, [s for s in meta.get("surgery", []) if "freeze" not in s], log)
    return model


def load_trained(load_upstream: UpstreamReader, stage: str,
                 log: logging.Logger) -> tuple[nn.Module, BatchTransform, dict, dict]:
    """(model in eval mode on the CPU, input transform, meta, the whole best.pt) of upstream `stage`."""
    best = load_upstream(stage, BEST_CHECKPOINT, read_checkpoint)
    meta = best["meta"]
    model = rebuild_model(meta, log)
    model.load_state_dict(best["model"])
    return model.eval(), transform_from_meta(meta), meta, best
