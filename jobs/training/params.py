"""The training loop's parameters (jobs/training/loop.py). Kept apart from the loop, without torch,
so that registering the stage kinds (the CLI, every stage's start) does not import torch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class TrainParams:
    epochs: int = field(default=10, metadata={"min": 1})
    batch_size: int = field(default=64, metadata={"min": 1})
    steps_per_epoch: int = field(default=0, metadata={
        "min": 0, "help": "0 = an epoch is one pass over the training set; N = an epoch is N optimizer steps "
                          "(validation after each), for step-counted recipes: 1400 steps, eval every 100 = "
                          "epochs 14, steps_per_epoch 100"})
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = field(default=1e-3, metadata={"min": 0.0})
    weight_decay: float = field(default=1e-4, metadata={"min": 0.0})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    schedule: Literal["cosine", "constant", "step"] = "cosine"
    warmup_epochs: float = field(default=0.0, metadata={"min": 0.0})
    step_size: int = field(default=10, metadata={"min": 1, "help": "schedule step: lr *= gamma every step_size epochs"})
    gamma: float = field(default=0.1, metadata={"min": 0.0, "help": "schedule step: the factor per step"})
    label_smoothing: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0,
                                                          "help": "training loss only; val loss is plain CE"})
    mixup_alpha: float = field(default=0.0, metadata={"min": 0.0, "help": "MixUp Beta(a, a) per batch; 0 = off"})
    cutmix_alpha: float = field(default=0.0, metadata={
        "min": 0.0, "help": "CutMix Beta(a, a) per batch; 0 = off (both on: one of them per batch, 50/50)"})
    patience: int = field(default=0, metadata={
        "min": 0, "help": "early stop after this many epochs without a better val acc; 0 = off"})
    amp: bool = field(default=False, metadata={"help": "mixed precision on CUDA (ignored on CPU)"})
    amp_dtype: Literal["bf16", "fp16"] = "bf16"
    channels_last: bool = False
    log_every: int = field(default=50, metadata={"min": 1, "help": "progress line every N steps"})
    # Several processes (resources: nodes x tasks, or gpus): see jobs/training/distributed.py.
    sync_bn: bool = field(default=False, metadata={
        "help": "several processes: BatchNorm statistics over the global batch (SyncBatchNorm) instead of "
                "each rank's share"})
    dist_timeout_s: float = field(default=600.0, metadata={
        "min": 1.0, "help": "several processes: a rendezvous or collective that waits longer fails the job"})
