"""Stage kinds `download` and `prepare`: any data set of jobs/data/datasets.py by name.

download: the official files into <data>/<dataset>/ (or `root`), checksums verified by the
          downloader, and a sha256 MANIFEST.json; files already staged in the official layout are
          accepted as they are (then only the manifest is written).
prepare:  reads them with the format's reader and writes split.npz (x_/y_ train, val, test as
          uint8 images and int64 labels, classes), class_counts.csv, class_map_ids.json
          ({original_id: new_id}), class_map_names.json ({name: new_id}) and a report.md fragment.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.contract import StageContext, register
from safeio import atomic_write_json, atomic_write_text
from safeio.markdown import markdown_table

from jobs.data.files import SPLIT_FILE, DataError, save_arrays, verify_manifest, write_class_counts, write_manifest
from jobs.data.datasets import DatasetName, EmnistSplit, check_official_md5, get_dataset
from jobs.data.splits import SplitPlan, class_subset, mapping_tables, relabel, split_arrays, to_grey

ROOT_HELP = "folder of the data set's official files; empty = <paths.data>/<dataset>"


def dataset_root(ctx: StageContext, dataset: str, root: str) -> Path:
    return Path(root) if root else ctx.data_dir / dataset


@dataclass
class DownloadParams:
    dataset: DatasetName
    split: EmnistSplit = field(default="byclass", metadata={"help": "EMNIST split (other data sets ignore it)"})
    root: str = field(default="", metadata={"help": ROOT_HELP})
    verify_official: bool = field(default=False, metadata={
        "help": "also check already staged files against the release's md5s (MNIST, CIFAR)"})
    models: list[str] = field(default_factory=list, metadata={
        "help": "models whose ImageNet weights are staged in <paths.cache> (torchvision: hub/checkpoints, timm: "
                "huggingface/) for `pretrained: imagenet` offline; `timm:NAME` where torchvision has NAME too"})
    weights_files: dict[str, str] = field(default_factory=dict, metadata={
        "help": "{model: local file} staged instead of downloading (torchvision models, under torchvision's own "
                "file name; for timm set the train stage's model.pretrained to the file)"})


@register("download", DownloadParams)
def download(p: DownloadParams, ctx: StageContext) -> dict:
    """Stage a data set's official files by name (checksums verified) with a sha256 manifest, or
    accept them already staged in the official layout. Runs where there is internet; every later
    stage reads only what this one staged."""
    ds, root = get_dataset(p.dataset), dataset_root(ctx, p.dataset, p.root)
    staged = ds.staged(root, p.split)
    if staged:
        ctx.log.info("%s already staged in %s (official layout): not downloading", p.dataset, root)
        bad = check_official_md5(ds, root, p.split) if p.verify_official else []
        if bad:
            raise DataError(f"{root / bad[0]} differs from the official release (md5); delete it and run "
                            f"this stage again to download it")
    else:
        root.mkdir(parents=True, exist_ok=True)
        fetch(ds, root, p.split, ctx)
        missing = [f for f in ds.files(root, p.split) if not f.exists()]
        if missing:
            raise DataError(f"downloading {p.dataset} left {missing[0]} missing")
    files = ds.to_manifest(root, p.split)
    write_manifest(root, files, source=ds.source + (" (pre-staged)" if staged else ""))
    weights = stage_weights(p, ctx)
    ctx.record(total_bytes=sum(f.stat().st_size for f in files + [w for ws in weights.values() for w in ws]))
    return {"dataset": p.dataset, "folder": str(root), "files": len(files), "downloaded": not staged,
            "weights": {name: [str(w) for w in ws] for name, ws in weights.items()}}


def fetch(ds, root: Path, split: str, ctx: StageContext) -> None:
    """The official files into root; a network failure says what to do instead of a traceback."""
    import urllib.error
    try:
        ds.fetch(root, split, ctx.log)
    except urllib.error.URLError as err:
        raise DataError(f"downloading {ds.name} from {ds.source} failed ({getattr(err, 'reason', err)}): run this "
                        f"stage where there is internet, or put the official files in {root} (official layout) "
                        f"and run it again") from err


def stage_weights(p: DownloadParams, ctx: StageContext) -> dict[str, list[Path]]:
    """The ImageNet weights of `models` (or `weights_files`) into the cache, with a sha256 manifest
    (<cache>/MANIFEST.json) that training checks before it reads them, offline."""
    stray = sorted(set(p.weights_files) - set(p.models))
    if stray:
        raise ValueError(f"weights_files: {stray[0]!r} is not in models {p.models}; add it there")
    if not p.models:
        return {}
    from jobs.models.registry import stage_imagenet_weights, write_weights_manifest   # torch: only when needed
    staged = {name: stage_imagenet_weights(name, ctx.cache_dir, p.weights_files.get(name, ""), ctx.log)
              for name in p.models}
    write_weights_manifest(ctx.cache_dir, staged)
    return staged


@dataclass
class PrepareParams:
    dataset: DatasetName
    split: EmnistSplit = field(default="byclass", metadata={"help": "EMNIST split (other data sets ignore it)"})
    label: Literal["fine", "coarse"] = field(default="fine", metadata={
        "help": "CIFAR-100: the 100 fine classes or the 20 coarse superclasses"})
    val_fraction: float = field(default=0.1, metadata={
        "min": 0.01, "max": 0.5, "help": "share of the training set held out for validation (val: split)"})
    val: Literal["split", "test", "pooled"] = field(default="split", metadata={
        "help": "split: hold out val_fraction of train; test: the official test split is the validation set; "
                "pooled: train and test pooled, then split by val_fraction and test_fraction (CIFAR-10 80/10/10)"})
    classes: list[str] = field(default_factory=list, metadata={
        "help": "keep these classes (names), relabelled 0..k-1 in this order; empty = all"})
    max_classes: int = field(default=0, metadata={
        "min": 0, "help": "keep only the first N classes (of `classes`, else in the data set's order); 0 = all"})
    train_per_class: int = field(default=0, metadata={
        "min": 0, "help": "at most N training images per class, a seeded random subset; 0 = all"})
    val_per_class: int = field(default=0, metadata={
        "min": 0, "help": "at most N validation images per class (val: split only); 0 = all"})
    test_per_class: int = field(default=0, metadata={
        "min": 0, "help": "at most N test images per class (with val: test, also val); 0 = all"})
    test_fraction: float = field(default=0.15, metadata={
        "min": 0.01, "max": 0.5, "help": "held out as test where the release has no test split (digits), "
                                         "and with val: pooled"})
    channels: Literal["keep", "grey"] = field(default="keep", metadata={
        "help": "grey: RGB -> one luminance channel (N, H, W), for models that take greyscale input"})
    root: str = field(default="", metadata={"help": ROOT_HELP})


@register("prepare", PrepareParams)
def prepare(p: PrepareParams, ctx: StageContext) -> dict:
    """Read a staged data set with its format's reader into split.npz (uint8 images, seeded and
    stratified train/val/test), with class names, counts per split and the label mapping tables."""
    ds, root = get_dataset(p.dataset), dataset_root(ctx, p.dataset, p.root)
    plan = SplitPlan(p.val_fraction, p.val, p.test_fraction, p.train_per_class, p.val_per_class, p.test_per_class)
    verify_manifest(root, " / ".join(ctx.upstream) or "download")
    missing = [f for f in ds.files(root, p.split) if not f.exists()]
    if missing:
        raise DataError(f"{p.dataset} ({p.split}) is not staged: {missing[0]} missing; run the download stage "
                        f"with the same dataset/split")
    data = ds.read(root, p.split, p.label)
    all_classes = [str(c) for c in data["classes"]]
    id_map = class_subset(all_classes, p.classes, p.max_classes)
    for s in ("train", "test"):
        if f"x_{s}" in data:
            data[f"x_{s}"], data[f"y_{s}"] = relabel(data[f"x_{s}"], data[f"y_{s}"], id_map)
    arrays = split_arrays(data, plan, ctx.seed)
    if p.channels == "grey":
        arrays.update({k: to_grey(v) for k, v in arrays.items() if k.startswith("x_")})
    classes = [all_classes[old] for old in id_map]
    source = plan.describe(ds.held_out)
    ctx.log.info("%s: %s", p.dataset, source)
    _write_outputs(ctx, arrays, classes, all_classes, id_map)
    sizes = {f"{s}_size": int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")}
    ctx.log.info("%s: %d of %d classes, sizes %s, images %s %s", p.dataset, len(classes), len(all_classes), sizes,
                 arrays["x_train"].shape[1:], arrays["x_train"].dtype)
    counts = {s: np.bincount(arrays[f"y_{s}"], minlength=len(classes)) for s in ("train", "val", "test")}
    atomic_write_text(ctx.report_path, _fragment(ctx, p, classes, sizes, source, counts, all_classes, id_map))
    ctx.record(total_samples=sum(sizes.values()))
    return {**sizes, "num_classes": len(classes), "dataset": p.dataset, "val_source": p.val,
            "image_shape": list(arrays["x_train"].shape[1:])}


def _write_outputs(ctx: StageContext, arrays: dict, classes: list[str], all_classes: list[str],
                   id_map: dict[int, int]) -> None:
    save_arrays(ctx.out_dir / SPLIT_FILE, **arrays, classes=np.array(classes))
    by_id, by_name = mapping_tables(all_classes, id_map)
    atomic_write_json(ctx.out_dir / "class_map_ids.json", by_id)
    atomic_write_json(ctx.out_dir / "class_map_names.json", by_name)
    write_class_counts(ctx.out_dir / "class_counts.csv", classes,
                       {s: arrays[f"y_{s}"] for s in ("train", "val", "test")})


def _fragment(ctx: StageContext, p: PrepareParams, classes: list[str], sizes: dict, source: str,
              counts: dict[str, np.ndarray], all_classes: list[str], id_map: dict[int, int]) -> str:
    shown = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
    label = f", {p.label} labels" if p.dataset == "cifar100" else ""
    split = f" ({p.split})" if p.dataset == "emnist" else ""
    return (f"### {ctx.stage}: data\n\n`{p.dataset}`{split}{label}: {len(classes)} classes ({shown}); "
            f"train {sizes['train_size']}, val {sizes['val_size']}, test {sizes['test_size']} images.\n\n"
            f"Validation: {source}.\n\nClass counts per split: [class_counts.csv](class_counts.csv); label "
            f"mapping: [class_map_ids.json](class_map_ids.json), [class_map_names.json](class_map_names.json).\n"
            + _mapping_lines(all_classes, id_map, len(classes)) + _count_table(classes, counts))


def _mapping_lines(all_classes: list[str], id_map: dict[int, int], shown: int, most: int = 20) -> str:
    if shown > most:
        return ""
    by_id, by_name = mapping_tables(all_classes, id_map)
    return f"\n`{{original_id: new_id}}` = `{by_id}`; `{{name: new_id}}` = `{by_name}`.\n"


def _count_table(classes: list[str], counts: dict[str, np.ndarray], most: int = 20) -> str:
    """Images per class and split, as a table, for label sets small enough to read (CSV otherwise)."""
    if len(classes) > most:
        return ""
    rows = [[i, name, *(int(c[i]) for c in counts.values())] for i, name in enumerate(classes)]
    return "\n" + markdown_table(rows, ["id", "class", *counts]) + "\n"
