"""What a config's `model:` mapping says (jobs/models/registry.py builds it). Without torch, so that
registering the stage kinds does not import torch."""
from __future__ import annotations

from dataclasses import dataclass, field

SOURCES = ("auto", "torchvision", "timm", "project")


@dataclass
class ModelSpec:
    """What a config's `model:` mapping says."""
    name: str
    pretrained: str = field(default="none", metadata={"help": "imagenet | none | path of a state_dict file"})
    source: str = field(default="auto", metadata={"help": "auto (project, torchvision, timm) | "
                                                          "torchvision | timm | project"})
    kwargs: dict = field(default_factory=dict, metadata={"help": "extra constructor arguments"})
