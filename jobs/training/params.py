"""Parameters without torch, so that registering the stage kinds (the CLI, every stage's start)
does not import it: the loop's (TrainParams, jobs/training/loop.py), where one run of it happens
(FitEnv), and the train recipe's (TrainStageParams, jobs/training/recipe.py: the loop's, the model,
its surgery, inputs and data), which kinds train, hpo and retrain share."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from jobs.models.spec import ModelSpec


@dataclass
class FitEnv:
    """Where and as which process one run of the loop happens: all fit() reads besides the model,
    the data and TrainParams. A stage builds it from its context."""
    out_dir: Path                 # best.pt goes here
    checkpoint_path: Path         # the resume file, rewritten after every epoch
    log: logging.Logger
    seed: int = 0                 # the batch order's generator
    device: str = "cpu"           # "cuda" or "cpu"
    fingerprint: str = ""         # a resume file written under another fingerprint is not resumed
    rank: int = 0                 # several processes (jobs/training/distributed.py): this one's rank;
    world_size: int = 1           # only rank 0 writes files
    # progress(done, of, unit, **numbers): how far the run is, for the engine's `status`; the
    # stage passes it (rank 0 only), None reports nothing (a search's trials report per trial)
    progress: Callable[..., None] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


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


@dataclass
class TrainModelSpec(ModelSpec):
    """ModelSpec with a typed `kwargs`, so the config schema accepts a mapping there."""
    kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "extra constructor arguments"})


@dataclass
class TrainStageParams(TrainParams):
    model: TrainModelSpec = field(default_factory=lambda: TrainModelSpec("resnet18"), metadata={
        "help": "{name, pretrained: none|imagenet|<file>, source: auto|torchvision|timm|project, kwargs}"})
    surgery: list[dict[str, Any]] = field(default_factory=list, metadata={
        "help": "steps applied after the weights load, in order: replace_activation, se, freeze"})
    data_stage: str = "prepare"
    init_from: str = field(default="", metadata={"help": "upstream stage whose best.pt to start from; '' = none"})
    resolution: int = field(default=0, metadata={"min": 0, "help": "input side in pixels; 0 = the data's own"})
    augment: list[Literal["crop_pad", "hflip", "color_jitter", "rotate", "resized_crop"]] = field(
        default_factory=list, metadata={"help": "on whole uint8 batches on the device, training only: rotate and "
                                                "resized_crop with the resize in one resampling, then the rest in order"})
    rotate_deg: float = field(default=15.0, metadata={
        "min": 0.0, "max": 180.0, "help": "augment rotate: angle drawn uniformly in +-this many degrees"})
    crop_area: list[float] = field(default_factory=lambda: [0.35, 1.0], metadata={
        "help": "augment resized_crop: [min, max] share of the image's area kept, then resized back"})
    normalize: Literal["imagenet", "dataset", "mean_image", "none"] = field(default="imagenet", metadata={
        "help": "imagenet / dataset: per-channel mean and std; mean_image: pixels 0..255 minus the training "
                "set's mean image (the MLP practical's preprocessing; needs resolution 0); none: [0, 1]"})
    cache_features: bool = field(default=True, metadata={
        "help": "only the head trains, no augment/mixup/cutmix: backbone features once, then the head on them"})
    sample_grid: bool = field(default=False, metadata={
        "help": "write augmented_grid.png: 16 training images as the model sees them in training, with labels"})
    weights_stage: str = field(default="download", metadata={
        "help": "pretrained: imagenet: the upstream stage that staged the weights (its manifest is checked)"})

    def problem(self) -> tuple[str, str] | None:
        """(key, message) of a value no run can use, else None. The stage kinds raise it as their
        config error, so a bad config stops before any job starts."""
        area = self.crop_area
        if len(area) != 2 or not 0 < area[0] <= area[1] <= 1:
            return "crop_area", f"got {area}; expected [min, max] with 0 < min <= max <= 1, e.g. [0.35, 1.0]"
        return None
