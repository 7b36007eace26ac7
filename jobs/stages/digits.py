"""Quickstart data: scikit-learn's bundled digits (1,797 real 8x8 handwritten digits, no download)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.registry import StageContext, register
from pipeline.state import atomic_path

from jobs.data.files import load_arrays, save_arrays, stratified_split, verify_manifest, write_class_counts, write_manifest

SUBDIR = "digits"


@dataclass
class DigitsDownloadParams:
    """Materialise the digits into data/digits/ as .npy files with a sha256 manifest."""


@register("digits_download", DigitsDownloadParams)
def download(p: DigitsDownloadParams, ctx: StageContext) -> dict:
    from sklearn.datasets import load_digits
    folder = ctx.data_dir / SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    # 0..16 ink levels -> 0..255 grey levels, the usual on-disk image range.
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)       # (N, 8, 8)
    labels = digits.target.astype(np.int64)                                # (N,)
    files = []
    for name, arr in (("images.npy", images), ("labels.npy", labels)):
        path = folder / name
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
        files.append(path)
    write_manifest(folder, files, source="sklearn.datasets.load_digits (UCI optdigits test set)")
    ctx.record(total_samples=len(labels))
    ctx.log.info("wrote %d images to %s", len(labels), folder)
    return {"num_images": int(len(labels)), "num_classes": int(labels.max() + 1)}


@dataclass
class DigitsPreprocessParams:
    val_fraction: float = field(default=0.15, metadata={"min": 0.01, "max": 0.5})
    test_fraction: float = field(default=0.15, metadata={"min": 0.01, "max": 0.5})


@register("digits_preprocess", DigitsPreprocessParams)
def preprocess(p: DigitsPreprocessParams, ctx: StageContext) -> dict:
    """Seeded, stratified train/val/test split; arrays + class counts into the stage folder."""
    folder = ctx.data_dir / SUBDIR
    verify_manifest(folder, producer=" / ".join(ctx.upstream) or "download")
    images, labels = np.load(folder / "images.npy"), np.load(folder / "labels.npy")
    fractions = {"train": 1 - p.val_fraction - p.test_fraction, "val": p.val_fraction, "test": p.test_fraction}
    split = stratified_split(labels, fractions, ctx.seed)
    arrays = {}
    for name, idx in split.items():
        arrays[f"x_{name}"], arrays[f"y_{name}"] = images[idx], labels[idx]
    classes = [str(c) for c in range(int(labels.max()) + 1)]
    arrays["classes"] = np.array(classes)
    save_arrays(ctx.out_dir / "split.npz", **arrays)
    write_class_counts(ctx.out_dir / "class_counts.csv", classes, {n: labels[i] for n, i in split.items()})
    sizes = {f"{n}_size": int(len(i)) for n, i in split.items()}
    ctx.log.info("split sizes: %s", sizes)
    return sizes


def load_split(stage_dir) -> dict[str, np.ndarray]:
    return load_arrays(stage_dir / "split.npz", producer="preprocess")
