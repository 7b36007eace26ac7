"""EMNIST: staged download (NIST's gzip release + ResNet-18 ImageNet weights) and preprocessing.

Layout after `emnist_download` (the NIST zip's own names, kept gzip-compressed):
  <data>/EMNIST/gzip/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte.gz
  <data>/EMNIST/gzip/emnist-<split>-mapping.txt          "label ascii_code" per line
  <cache>/hub/checkpoints/resnet18-f37072fd.pth          torchvision's weights file name
"""
from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.registry import StageContext, register
from pipeline.state import atomic_path

from .data import DataError, save_arrays, stratified_split, verify_manifest, write_class_counts, write_manifest
from .datasets import read_idx

NIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
NIST_MD5 = "58c8d27c78d21e728a6bc7b3cc06412e"        # as torchvision.datasets.EMNIST checks it
Split = Literal["byclass", "bymerge", "balanced", "letters", "digits", "mnist"]


def emnist_dir(data_dir: Path) -> Path:
    return data_dir / "EMNIST" / "gzip"


def split_files(split: str) -> list[str]:
    return [f"emnist-{split}-{part}-ubyte.gz" for part in
            ("train-images-idx3", "train-labels-idx1", "test-images-idx3", "test-labels-idx1")] + \
           [f"emnist-{split}-mapping.txt"]


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
        _download_nist(folder, p.split, ctx)
    else:
        ctx.log.info("EMNIST %s already staged in %s: not downloading", p.split, folder)
    write_manifest(folder, [folder / f for f in split_files(p.split)], source=NIST_URL)
    weights = _stage_weights(p, ctx)
    write_manifest(weights.parent, [weights], source=p.weights_file or f"torchvision ResNet18_Weights.{p.weights}")
    return {"split": p.split, "weights_file": str(weights), "data_folder": str(folder)}


def _download_nist(folder: Path, split: str, ctx: StageContext) -> None:
    from torchvision.datasets.utils import download_url
    archive_dir = folder.parent
    ctx.log.info("downloading %s (md5 checked) into %s", NIST_URL, archive_dir)
    download_url(NIST_URL, str(archive_dir), filename="gzip.zip", md5=NIST_MD5)
    with zipfile.ZipFile(archive_dir / "gzip.zip") as zf:
        for name in split_files(split):
            with zf.open(f"gzip/{name}") as src, atomic_path(folder / name) as tmp, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)


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


def read_mapping(path: Path) -> list[str]:
    """emnist-<split>-mapping.txt: 'label ascii_code [ascii_code]' per line -> each label's
    character(s). `letters` starts at label 1 and lists upper and lower case: 'Aa'."""
    rows = [[int(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]
    chars = {row[0]: "".join(chr(c) for c in row[1:]) for row in rows}
    return [chars.get(i, "?") for i in range(max(chars) + 1)]


def fix_orientation(images: np.ndarray) -> np.ndarray:
    """EMNIST stores glyphs transposed: rotating -90 degrees then flipping horizontally is a
    transpose of the last two axes. (N, 28, 28) -> (N, 28, 28)."""
    return np.ascontiguousarray(images.transpose(0, 2, 1))


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
    x_train, y_train, x_test, y_test = (read_idx(folder / n) for n in names[:4])
    classes = read_mapping(folder / names[4])
    x_train, x_test = fix_orientation(x_train), fix_orientation(x_test)
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
