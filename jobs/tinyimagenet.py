"""tiny-ImageNet (200 classes, 64x64 JPEGs): official zip download and preprocessing.

Layout (the zip's own): tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG,
val/images/*.JPEG, val/val_annotations.txt, test/images/*.JPEG}. The official test split has no
labels, so evaluation uses val, labelled through val_annotations.txt.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.registry import StageContext, register

from .data import DataError, save_arrays, sha256, verify_manifest, write_class_counts, write_manifest

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def dataset_dir(data_dir: Path) -> Path:
    return data_dir / "tiny-imagenet-200"


@dataclass
class DeployDownloadParams:
    model_source: str = field(default="hub", metadata={"help": "hub (torch.hub repo) or timm"})
    hub_repo: str = "facebookresearch/dinov2"
    hub_model: str = "dinov2_vits14"
    timm_model: str = field(default="vit_small_patch14_dinov2.lvd142m", metadata={"help": "when model_source=timm"})
    timm_pretrained: bool = True
    timm_kwargs: dict[str, int] = field(default_factory=dict, metadata={"help": "e.g. {depth: 2} for a small test model"})
    img_size: int = field(default=224, metadata={"min": 14})
    pool: Literal["cls", "avg"] = field(default="cls", metadata={
        "help": "features for the head: the CLS token, or the mean of the patch tokens"})


@register("tinyimagenet_download", DeployDownloadParams)
def download(p: DeployDownloadParams, ctx: StageContext) -> dict:
    """The data set and the model into local folders, so every later stage runs offline."""
    import os
    folder = dataset_dir(ctx.data_dir)
    zip_sha = None
    if not (folder / "wnids.txt").exists():
        from torchvision.datasets.utils import download_url
        ctx.log.info("downloading %s", URL)
        download_url(URL, str(ctx.data_dir), filename="tiny-imagenet-200.zip")
        archive = ctx.data_dir / "tiny-imagenet-200.zip"
        zip_sha = sha256(archive)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(ctx.data_dir)
    else:
        ctx.log.info("tiny-ImageNet already staged in %s: not downloading", folder)
    files = [folder / "wnids.txt", folder / "words.txt", folder / "val" / "val_annotations.txt"]
    write_manifest(folder, files, source=URL + (f" (zip sha256 {zip_sha})" if zip_sha else " (pre-staged)"))
    os.environ["TORCH_HOME"] = str(ctx.cache_dir)
    from .vit import build_backbone
    build_backbone({**_model_meta(p), "offline": False}, ctx.cache_dir)   # fills the hub/timm caches
    return {"dataset": str(folder), "zip_sha256": zip_sha, "model": _model_meta(p)}


def _model_meta(p: DeployDownloadParams) -> dict:
    return {"source": p.model_source, "hub_repo": p.hub_repo, "hub_model": p.hub_model, "timm_model": p.timm_model,
            "timm_pretrained": p.timm_pretrained, "timm_kwargs": dict(p.timm_kwargs), "img_size": p.img_size,
            "pool": p.pool}


def read_wnids(folder: Path) -> tuple[list[str], dict[str, str]]:
    wnids = [w.strip() for w in (folder / "wnids.txt").read_text().splitlines() if w.strip()]
    words = {}
    for line in (folder / "words.txt").read_text().splitlines():
        if "\t" in line:
            wnid, text = line.split("\t", 1)
            words[wnid] = text.strip()
    return wnids, words


def read_val_annotations(folder: Path) -> dict[str, str]:
    """val/val_annotations.txt: 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1' -> file -> wnid."""
    out = {}
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def load_rgb(path: Path, size: int = 64) -> np.ndarray:
    """JPEG -> (size, size, 3) uint8; greyscale (and CMYK) images are converted to RGB."""
    from PIL import Image
    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


@dataclass
class TinyPreprocessParams:
    train_per_class: int = field(default=100, metadata={"min": 0, "help": "0 = all 500"})
    val_per_class: int = field(default=0, metadata={"min": 0, "help": "0 = all 50"})
    num_classes: int = field(default=200, metadata={"min": 2, "max": 200})


@register("tinyimagenet_preprocess", TinyPreprocessParams)
def preprocess(p: TinyPreprocessParams, ctx: StageContext) -> dict:
    folder = dataset_dir(ctx.data_dir)
    verify_manifest(folder, " / ".join(ctx.upstream) or "download")
    wnids, words = read_wnids(folder)
    wnids = wnids[:p.num_classes]
    index = {w: i for i, w in enumerate(wnids)}
    x_train, y_train = [], []
    for w in wnids:
        files = sorted((folder / "train" / w / "images").glob("*.JPEG"))
        if not files:
            raise DataError(f"no training images for {w} in {folder / 'train' / w / 'images'}")
        for f in files[:p.train_per_class or None]:
            x_train.append(load_rgb(f))
            y_train.append(index[w])
    x_val, y_val, kept = [], [], {w: 0 for w in wnids}
    for name, w in sorted(read_val_annotations(folder).items()):
        if w in index and (not p.val_per_class or kept[w] < p.val_per_class):
            x_val.append(load_rgb(folder / "val" / "images" / name))
            y_val.append(index[w])
            kept[w] += 1
    classes = [words.get(w, w).split(",")[0] for w in wnids]
    arrays = {"x_train": np.stack(x_train), "y_train": np.array(y_train, np.int64), "x_val": np.stack(x_val),
              "y_val": np.array(y_val, np.int64), "classes": np.array(classes), "wnids": np.array(wnids)}
    save_arrays(ctx.out_dir / "split.npz", **arrays)
    write_class_counts(ctx.out_dir / "class_counts.csv", classes, {"train": arrays["y_train"], "val": arrays["y_val"]})
    ctx.log.info("%d classes, %d train and %d val images (val is the labelled evaluation split)",
                 len(wnids), len(y_train), len(y_val))
    return {"train_size": len(y_train), "val_size": len(y_val), "num_classes": len(wnids)}
