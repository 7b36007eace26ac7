"""EMNIST: staged download (NIST's gzip release + ResNet-18 ImageNet weights) and preprocessing.

Layout after `emnist_download` (the NIST zip's own names, kept gzip-compressed):
  <data>/EMNIST/gzip/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte.gz
  <data>/EMNIST/gzip/emnist-<split>-mapping.txt          "label ascii_code" per line
  <cache>/hub/checkpoints/resnet18-f37072fd.pth          torchvision's weights file name
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.registry import StageContext, register
from pipeline.state import atomic_path

from jobs.data.files import DataError, save_arrays, stratified_split, verify_manifest, write_class_counts, write_manifest
from jobs.data.datasets import NIST_MD5, NIST_URL, fetch_nist  # noqa: F401 - NIST_MD5 kept importable here
from jobs.data.datasets import EmnistSplit as Split
from jobs.data.datasets import emnist_folder
from jobs.data.formats import emnist_files as split_files
from jobs.data.formats import fix_orientation, read_emnist, read_mapping  # noqa: F401 - moved to formats.py


def emnist_dir(data_dir: Path) -> Path:
    return emnist_folder(data_dir)


@dataclass
class EmnistDownloadParams:
    split: Split = "byclass"
    weights: str = field(default="IMAGENET1K_V1", metadata={"help": "torchvision ResNet18_Weights name"})
    weights_file: str = field(default="", metadata={"help": "use this local checkpoint instead of downloading"})


@register("emnist_download", EmnistDownloadParams)
def download(p: EmnistDownloadParams, ctx: StageContext) -> dict:
    """Runs on a partition with internet; every later stage reads only what this one wrote."""
    folder = emnist_dir(ctx.data_dir)
    if not all((folder / f).exists() for f in split_files(p.split)):
        fetch_nist(folder, p.split, ctx.log)
    else:
        ctx.log.info("EMNIST %s already staged in %s: not downloading", p.split, folder)
    write_manifest(folder, [folder / f for f in split_files(p.split)], source=NIST_URL)
    weights = _stage_weights(p, ctx)
    write_manifest(weights.parent, [weights], source=p.weights_file or f"torchvision ResNet18_Weights.{p.weights}")
    return {"split": p.split, "weights_file": str(weights), "data_folder": str(folder)}


def _stage_weights(p: EmnistDownloadParams, ctx: StageContext) -> Path:
    """The ImageNet weights into <cache>/hub/checkpoints (torch.hub's cache, TORCH_HOME=<cache>)."""
    import os

    import torch
    from torchvision.models import ResNet18_Weights
    checkpoints = ctx.cache_dir / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    weights = ResNet18_Weights[p.weights]
    target = checkpoints / Path(weights.url).name
    if p.weights_file:
        with atomic_path(target) as tmp:
            shutil.copyfile(p.weights_file, tmp)
        ctx.log.info("staged local weights %s as %s", p.weights_file, target)
    elif not target.exists():
        os.environ["TORCH_HOME"] = str(ctx.cache_dir)
        torch.hub.load_state_dict_from_url(weights.url, model_dir=str(checkpoints), progress=False, check_hash=True)
    return target


@dataclass
class EmnistPreprocessParams:
    split: Split = "byclass"
    val_fraction: float = field(default=0.1, metadata={"min": 0.01, "max": 0.5})


@register("emnist_preprocess", EmnistPreprocessParams)
def preprocess(p: EmnistPreprocessParams, ctx: StageContext) -> dict:
    folder = emnist_dir(ctx.data_dir)
    producer = " / ".join(ctx.upstream) or "download"
    verify_manifest(folder, producer)
    names = split_files(p.split)
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise DataError(f"EMNIST split {p.split!r} not staged ({missing[0]} missing in {folder}); "
                        f"set the {producer} stage's split to {p.split!r} and run it")
    raw = read_emnist(folder, p.split)            # glyphs upright, int64 labels
    x_train, y_train, x_test, y_test = raw["x_train"], raw["y_train"], raw["x_test"], raw["y_test"]
    classes = [str(c) for c in raw["classes"]]
    split = stratified_split(y_train, {"train": 1 - p.val_fraction, "val": p.val_fraction}, ctx.seed)
    arrays = {"x_train": x_train[split["train"]], "y_train": y_train[split["train"]].astype(np.int64),
              "x_val": x_train[split["val"]], "y_val": y_train[split["val"]].astype(np.int64),
              "x_test": x_test, "y_test": y_test.astype(np.int64), "classes": np.array(classes)}
    save_arrays(ctx.out_dir / "split.npz", **arrays)
    write_class_counts(ctx.out_dir / "class_counts.csv", classes,
                       {s: arrays[f"y_{s}"] for s in ("train", "val", "test")})
    sizes = {f"{s}_size": int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")}
    ctx.log.info("EMNIST %s: %d classes, sizes %s", p.split, len(classes), sizes)
    return {**sizes, "num_classes": len(classes)}
