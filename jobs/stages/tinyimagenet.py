"""tiny-ImageNet (200 classes, 64x64 JPEGs): official zip download and preprocessing.

Layout (the zip's own): tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG,
val/images/*.JPEG, val/val_annotations.txt, test/images/*.JPEG}. The official test split has no
labels, so evaluation uses val, labelled through val_annotations.txt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.registry import StageContext, register

from jobs.data.files import save_arrays, verify_manifest, write_class_counts, write_manifest
from jobs.data.datasets import TINY_URL as URL
from jobs.data.datasets import fetch_tinyimagenet, tiny_folder
from jobs.data.formats import load_rgb, read_tinyimagenet, read_val_annotations, read_wnids  # noqa: F401 - moved there


def dataset_dir(data_dir: Path) -> Path:
    return tiny_folder(data_dir)


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
        zip_sha = fetch_tinyimagenet(ctx.data_dir, ctx.log)
    else:
        ctx.log.info("tiny-ImageNet already staged in %s: not downloading", folder)
    files = [folder / "wnids.txt", folder / "words.txt", folder / "val" / "val_annotations.txt"]
    write_manifest(folder, files, source=URL + (f" (zip sha256 {zip_sha})" if zip_sha else " (pre-staged)"))
    os.environ["TORCH_HOME"] = str(ctx.cache_dir)
    from jobs.deployment.vit import build_backbone
    build_backbone({**_model_meta(p), "offline": False}, ctx.cache_dir)   # fills the hub/timm caches
    return {"dataset": str(folder), "zip_sha256": zip_sha, "model": _model_meta(p)}


def _model_meta(p: DeployDownloadParams) -> dict:
    return {"source": p.model_source, "hub_repo": p.hub_repo, "hub_model": p.hub_model, "timm_model": p.timm_model,
            "timm_pretrained": p.timm_pretrained, "timm_kwargs": dict(p.timm_kwargs), "img_size": p.img_size,
            "pool": p.pool}


@dataclass
class TinyPreprocessParams:
    train_per_class: int = field(default=100, metadata={"min": 0, "help": "0 = all 500"})
    val_per_class: int = field(default=0, metadata={"min": 0, "help": "0 = all 50"})
    num_classes: int = field(default=200, metadata={"min": 2, "max": 200})


@register("tinyimagenet_preprocess", TinyPreprocessParams)
def preprocess(p: TinyPreprocessParams, ctx: StageContext) -> dict:
    folder = dataset_dir(ctx.data_dir)
    verify_manifest(folder, " / ".join(ctx.upstream) or "download")
    arrays = read_tinyimagenet(folder, p.num_classes, p.train_per_class, p.val_per_class)
    wnids, y_train, y_val = list(arrays["wnids"]), arrays["y_train"], arrays["y_val"]
    classes = [str(c) for c in arrays["classes"]]
    save_arrays(ctx.out_dir / "split.npz", **arrays)
    write_class_counts(ctx.out_dir / "class_counts.csv", classes, {"train": arrays["y_train"], "val": arrays["y_val"]})
    ctx.log.info("%d classes, %d train and %d val images (val is the labelled evaluation split)",
                 len(wnids), len(y_train), len(y_val))
    return {"train_size": len(y_train), "val_size": len(y_val), "num_classes": len(wnids)}
